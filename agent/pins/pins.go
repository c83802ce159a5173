// Package pins fetches images into a node's store and keeps them there: preheat (walk an image's
// index, manifests, configs and layers and fetch each through the pipeline, reporting progress)
// and pins (records of the content garbage collection must keep), with the admin endpoints and
// their client. Every node has them; a seed adds replicas (package seed).
package pins

import (
	"context"
	"encoding/json"
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
func (p *Pins) Add(ctx context.Context, req PreheatRequest, report func(Progress)) (Pin, error) {
	if req.Replicas < 0 || req.Replicas > MaxReplicas {
		return Pin{}, fmt.Errorf("replicas %d: want 1 to %d: %w", req.Replicas, MaxReplicas, errdefs.ErrInvalid)
	}
	// The content stays held until the pin keeps it.
	pin, release, err := p.preheat(ctx, req, report)
	defer release()
	if err != nil {
		return Pin{}, err
	}
	if pin.Replicas == 0 {
		pin.Replicas = p.replicas
	}
	if _, err := p.Put(pin); err != nil {
		return Pin{}, err
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
		ok, err := p.Delete(k)
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
		keys = append(keys, KeyOf(false, r.String()))
	}
	if repo, tag, ok := strings.Cut(ref, ":"); ok && names.ValidRepository(repo) && names.ValidTag(tag) {
		keys = append(keys, KeyOf(true, ref))
	}
	return keys
}

// Pin is an image pinned on a node: its record in the store (which reads only Digests and
// Created, to keep the content and order pins), the admin API's answer, and what the seed
// protocol carries to replicate it. It is recorded under Key.
type Pin struct {
	// Hosted marks an image pushed to a seed: Repo and Tag name it in the hosted repositories,
	// which have no registry, and Ref is repo:tag.
	Hosted bool `json:"hosted,omitempty"`
	// Ref is the image reference as pinned, normalised: registry/repo:tag or registry/repo@digest;
	// a hosted (pushed) image has no registry part.
	Ref      string `json:"ref"`
	Registry string `json:"registry,omitempty"`
	Repo     string `json:"repo"`
	Tag      string `json:"tag,omitempty"`
	// Digest is the root manifest (an index or a manifest) the reference resolved to, and
	// MediaType its media type.
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType,omitempty"`
	// Digests is every piece of content the pin keeps: its Manifests manifests first, then
	// configs and layers.
	Digests   []digest.Digest `json:"digests"`
	Manifests int             `json:"manifests"`
	// Bytes is the total size of Digests.
	Bytes int64 `json:"bytes"`
	// Platforms and AllPlatforms are the index entries the pin selected, so another seed
	// replicating it selects the same.
	Platforms    []string `json:"platforms,omitempty"`
	AllPlatforms bool     `json:"allPlatforms,omitempty"`
	// Replicas is how many seeds should hold the image (0 or 1: this node only).
	Replicas int `json:"replicas,omitempty"`
	// Created is when the pin's content was chosen: the push of a hosted tag, or the preheat
	// that resolved the reference. Replicas carry it unchanged, so the newest choice wins.
	Created time.Time `json:"created"`
}

// Key is what the pin is recorded under: hosted and upstream images never share a key.
func (p Pin) Key() string { return KeyOf(p.Hosted, p.Ref) }

// KeyOf is the key of the pin of ref.
func KeyOf(hosted bool, ref string) string {
	if hosted {
		return "hosted:" + ref
	}
	return ref
}

// Put records pin unless a pin of the same key was created later, reporting whether it did.
func (p *Pins) Put(pin Pin) (bool, error) {
	rec, err := json.Marshal(pin)
	if err != nil {
		return false, err
	}
	return p.st.Pins().Put(pin.Key(), rec)
}

// Get returns the pin recorded under key.
func (p *Pins) Get(key string) (Pin, bool) { return Lookup(p.st, key) }

// Lookup returns the pin recorded under key in st (an unreadable record is no pin).
func Lookup(st *store.Store, key string) (Pin, bool) {
	rec, ok := st.Pins().Get(key)
	if !ok {
		return Pin{}, false
	}
	var pin Pin
	if err := json.Unmarshal(rec, &pin); err != nil {
		return Pin{}, false
	}
	return pin, true
}

// Delete removes the pin of key here only, reporting whether there was one.
func (p *Pins) Delete(key string) (bool, error) { return p.st.Pins().Delete(key) }

// List returns the pins of this node, ordered by key. Unreadable records are skipped.
func (p *Pins) List() ([]Pin, error) {
	recs, err := p.st.Pins().All()
	if err != nil {
		return nil, err
	}
	out := make([]Pin, 0, len(recs))
	for _, rec := range recs {
		var pin Pin
		if err := json.Unmarshal(rec, &pin); err != nil {
			p.log.Warn("an unreadable pin record", "err", err)
			continue
		}
		out = append(out, pin)
	}
	return out, nil
}
