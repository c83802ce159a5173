// Package pins fetches images into a node's store and keeps them there: preheat (walk an image's
// index, manifests, configs and layers and fetch each through the pipeline, reporting progress)
// and pins (records of the content garbage collection must keep), with the admin endpoints and
// their client. Every node has them; a seed adds replicas (package seed).
package pins

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/resolve"
	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/internal/reference"
)

// Targeter maps a reference's registry and repository to a fetch target. *agent.Agent
// implements it.
type Targeter interface {
	Target(registry, repo string) (fetch.Target, error)
}

// Seeds is the cluster's other seeds, on a seed: an unpin there is an unpin everywhere, so that
// replica repair does not bring the pin back.
type Seeds interface {
	// Unpin asks every other live seed to drop the pin of key, reporting whether any had it.
	Unpin(ctx context.Context, key string) bool
}

// Deps are what Pins are built from.
type Deps struct {
	Store     *store.Store
	Manifests *resolve.Resolver
	Blobs     *fetch.Pipeline
	Targets   Targeter
	Log       *slog.Logger
	// Replicas is the replica count of a pin that names none (1: this node only).
	Replicas int
	// Seeds is nil on a node that is not a seed.
	Seeds Seeds
}

// Pins manages a node's pins: images whose content garbage collection never evicts.
type Pins struct {
	st        *store.Store
	manifests *resolve.Resolver
	blobs     *fetch.Pipeline
	targets   Targeter
	log       *slog.Logger
	replicas  int
	seeds     Seeds
}

// New returns the pins of a node.
func New(deps Deps) *Pins {
	return &Pins{st: deps.Store, manifests: deps.Manifests, blobs: deps.Blobs, targets: deps.Targets, log: deps.Log,
		replicas: max(deps.Replicas, 1), seeds: deps.Seeds}
}

// MaxReplicas bounds a pin's replica count.
const MaxReplicas = 64

// DefaultReplicas is the replica count of a pin that names none.
func (p *Pins) DefaultReplicas() int { return p.replicas }

// Add fetches the image and pins it, reporting progress. The pin is recorded only once every
// piece of its content is committed.
func (p *Pins) Add(ctx context.Context, req PreheatRequest, report func(Progress)) (store.Pin, error) {
	if req.Replicas < 0 || req.Replicas > MaxReplicas {
		return store.Pin{}, fmt.Errorf("replicas %d: want 1 to %d: %w", req.Replicas, MaxReplicas, errdefs.ErrInvalid)
	}
	pin, err := p.Preheat(ctx, req, report)
	if err != nil {
		return store.Pin{}, err
	}
	if pin.Replicas == 0 {
		pin.Replicas = p.replicas
	}
	if _, err := p.st.PutPin(pin); err != nil {
		return store.Pin{}, err
	}
	p.log.Info("pinned", "ref", pin.Ref, "digest", pin.Digest, "objects", len(pin.Digests), "bytes", pin.Bytes, "replicas", pin.Replicas)
	return pin, nil
}

// Remove unpins ref here and, on a seed, on every seed that holds it. ref is an image reference
// as pinned, or repo:tag of a pushed image. It reports whether any node had the pin.
func (p *Pins) Remove(ctx context.Context, ref string) (bool, error) {
	keys := Keys(ref)
	if len(keys) == 0 {
		return false, fmt.Errorf("pin %q: not an image reference: %w", ref, errdefs.ErrInvalid)
	}
	found := false
	for _, k := range keys {
		ok, err := p.st.DeletePin(k)
		if err != nil {
			return false, err
		}
		if p.seeds != nil {
			ok = p.seeds.Unpin(ctx, k) || ok
		}
		if ok {
			found = true
			p.log.Info("unpinned", "pin", k)
		}
	}
	return found, nil
}

// Keys are the keys a reference given to `pin rm` may be recorded under: an upstream image's
// normalised reference, and a pushed image's repo:tag.
func Keys(ref string) []string {
	var keys []string
	if r, err := reference.Parse(ref); err == nil {
		keys = append(keys, store.PinKey(false, r.String()))
	}
	if repo, tag, ok := strings.Cut(ref, ":"); ok && names.ValidRepository(repo) && names.ValidTag(tag) {
		keys = append(keys, store.PinKey(true, ref))
	}
	return keys
}

// List returns the pins of this node.
func (p *Pins) List() ([]store.Pin, error) { return p.st.Pins() }

// Pin is a pin as the admin API shows it and the seed protocol carries it; its stored record
// is store.Pin, which can change without changing either.
type Pin struct {
	Hosted       bool            `json:"hosted,omitempty"`
	Ref          string          `json:"ref"`
	Registry     string          `json:"registry,omitempty"`
	Repo         string          `json:"repo"`
	Tag          string          `json:"tag,omitempty"`
	Digest       digest.Digest   `json:"digest"`
	MediaType    string          `json:"mediaType,omitempty"`
	Digests      []digest.Digest `json:"digests"`
	Manifests    int             `json:"manifests"`
	Bytes        int64           `json:"bytes"`
	Platforms    []string        `json:"platforms,omitempty"`
	AllPlatforms bool            `json:"allPlatforms,omitempty"`
	Replicas     int             `json:"replicas,omitempty"`
	Created      time.Time       `json:"created"`
}

// FromRecord is the API's view of a stored pin.
func FromRecord(r store.Pin) Pin {
	return Pin{Hosted: r.Hosted, Ref: r.Ref, Registry: r.Registry, Repo: r.Repo, Tag: r.Tag, Digest: r.Digest,
		MediaType: r.MediaType, Digests: r.Digests, Manifests: r.Manifests, Bytes: r.Bytes, Platforms: r.Platforms,
		AllPlatforms: r.AllPlatforms, Replicas: r.Replicas, Created: r.Created}
}

// Record is the pin as stored.
func (p Pin) Record() store.Pin {
	return store.Pin{Hosted: p.Hosted, Ref: p.Ref, Registry: p.Registry, Repo: p.Repo, Tag: p.Tag, Digest: p.Digest,
		MediaType: p.MediaType, Digests: p.Digests, Manifests: p.Manifests, Bytes: p.Bytes, Platforms: p.Platforms,
		AllPlatforms: p.AllPlatforms, Replicas: p.Replicas, Created: p.Created}
}
