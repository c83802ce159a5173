// Package resolve answers which manifest a reference names: a digest from the store, peers or
// the origin, verified; a tag by a fixed order of named steps (a fresh record of this node's,
// the tag's coordinator, the origin, the seeds' hosted repositories, and, while the origin
// cannot answer, the newest record this node or an authorized seed saw). A tag's digest is
// metadata: it is taken only from the origin, this node's records, or seeds the operator
// authorized; any other peer's answer is confirmed at the origin first. Manifests it gets are
// stored and announced like blobs.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/lifetime"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/internal/tags"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// Peers is what resolution asks of the cluster. *swarm.Client implements it.
type Peers interface {
	// Manifest gets a manifest by digest from a peer, verified, with its media type.
	Manifest(ctx context.Context, d digest.Digest) (body []byte, mediaType string, err error)
	// ManifestFrom is Manifest from the given peers, in order, with no provider lookup.
	ManifestFrom(ctx context.Context, peers []peer.ID, d digest.Digest) (body []byte, mediaType string, err error)
	// TagRecords returns the resolutions of a tag that peers saw, asking those given.
	TagRecords(ctx context.Context, peers []peer.ID, registry, repo, tag string) []tags.Record
}

// Cluster is what tag resolution asks of the peer network: the tag's coordinator and the
// seeds, and their answers. Nil for a node without peers.
type Cluster interface {
	// CoordinatorFor returns the node coordinating key, and whether that is this node.
	CoordinatorFor(ctx context.Context, key string) (p peer.ID, self bool, err error)
	// Seeds returns the live authorized seeds known.
	Seeds(ctx context.Context) []peer.ID
	// AuthorizedSeed reports whether p is a seed the operator authorized: only such a peer's
	// word on a tag is taken without the origin's confirmation.
	AuthorizedSeed(ctx context.Context, p peer.ID) bool
	// Self is this node's ID.
	Self() peer.ID
	// Resolve asks node p what a tag names; registry "" asks about its hosted repositories.
	Resolve(ctx context.Context, p peer.ID, registry, repo, tag string, accept []string) (tags.Record, error)
}

// HostedTags answers what a tag of a hosted (pushed) repository names on this node: a seed's.
type HostedTags interface {
	HostedTag(repo, tag string) (tags.Record, bool)
}

// Announcer is told of manifests stored, to provide them to the cluster.
type Announcer interface {
	Announce(d digest.Digest)
}

// Recorder is told of every manifest the node answers with, verified, and the repository it
// answers for: what it lists becomes the node's own record (the sizes of its blobs, bound
// before any peer's byte of them is taken). *descriptors.Index implements it.
type Recorder interface {
	RecordManifest(registry, repo string, body []byte) error
}

// Metrics are resolution's instruments, created and registered by the node.
type Metrics struct {
	// Stale counts tags answered from an old resolution while the origin was unreachable;
	// OriginVerifyFailures counts origin manifests that failed their digest.
	Stale                prometheus.Counter
	OriginVerifyFailures prometheus.Counter
}

// Deps are what a Resolver is built from.
type Deps struct {
	Store  *store.Store
	Origin *origin.Client
	// Peers and Cluster are nil on a node without peers; Hosted is nil on a node hosting
	// nothing; Announcer may be nil.
	Peers     Peers
	Cluster   Cluster
	Hosted    HostedTags
	Announcer Announcer
	// Recorder records what the manifests answered list (nil: nothing is recorded).
	Recorder Recorder
	// TagTTL is how long a resolution is used without asking again.
	TagTTL time.Duration
	// Started is when the node started (a node that has just started waits a little for the
	// seeds before saying that none hosts a tag).
	Started time.Time
	Log     *slog.Logger
	Metrics Metrics
}

// Resolver resolves manifests for one node.
type Resolver struct {
	st        *store.Store
	origin    *origin.Client
	peers     Peers
	cluster   Cluster
	hosted    HostedTags
	announcer Announcer
	recorder  Recorder
	ttl       time.Duration
	started   time.Time
	log       *slog.Logger
	metrics   Metrics
	group     singleflight.Group

	// life bounds work done for several waiting clients at once, which must not die with the
	// first client's request; Close ends it.
	life *lifetime.Lifetime
}

// New returns a Resolver. Close ends the work it does for several clients at once.
func New(deps Deps) *Resolver {
	r := &Resolver{st: deps.Store, origin: deps.Origin, peers: deps.Peers, cluster: deps.Cluster, hosted: deps.Hosted,
		announcer: deps.Announcer, recorder: deps.Recorder, ttl: deps.TagTTL, started: deps.Started, log: deps.Log, metrics: deps.Metrics}
	r.life = lifetime.New()
	return r
}

// Close ends resolutions in progress.
func (r *Resolver) Close() { r.life.End() }

// originTimeout bounds work done on behalf of several waiting clients.
const originTimeout = 2 * time.Minute

// Manifest is a manifest and where it came from ("cache", "peer", "origin").
type Manifest struct {
	MediaType string
	Digest    digest.Digest
	Body      []byte
	Source    string
}

// Get returns a manifest by digest or by tag. accept is the client's list of media types
// (empty: any). Errors wrap errdefs classes.
func (r *Resolver) Get(ctx context.Context, t fetch.Target, ref string, accept []string) (*Manifest, error) {
	var m *Manifest
	if strings.Contains(ref, ":") {
		d, err := digest.Parse(ref)
		if err != nil {
			return nil, fmt.Errorf("reference %q: %w", ref, errdefs.ErrInvalid)
		}
		if m, err = r.ByDigest(ctx, t, d, accept); err != nil {
			return nil, err
		}
	} else {
		res, err := r.Tag(ctx, t, ref, accept, true)
		if err != nil {
			return nil, err
		}
		m = res.Manifest
	}
	if r.recorder != nil {
		if err := r.recorder.RecordManifest(t.Host(), t.Repo, m.Body); err != nil {
			r.log.Warn("recording what a manifest lists failed", "digest", m.Digest, "repo", t.Repo, "err", err)
		}
	}
	return m, nil
}

// ByDigest returns manifest d from the store, else a peer, else the origin, verified and stored.
// Concurrent requests for one digest share one fetch.
func (r *Resolver) ByDigest(ctx context.Context, t fetch.Target, d digest.Digest, accept []string) (*Manifest, error) {
	return r.byDigest(ctx, t, d, accept, nil)
}

// byDigest is ByDigest asking holders first: the seeds that just said a hosted tag names d.
// Hosted content has no origin: when no provider record names it yet (a seed that took the push
// a moment ago is not found in the DHT at once), the seeds that hold it are asked directly.
func (r *Resolver) byDigest(ctx context.Context, t fetch.Target, d digest.Digest, accept []string, holders []peer.ID) (*Manifest, error) {
	if m, err := r.stored(d); err == nil {
		return m, nil
	}
	return do(&r.group, "manifest\x00"+d.String(), func() (*Manifest, error) {
		if m, err := r.stored(d); err == nil {
			return m, nil
		}
		octx, cancel := r.life.Context(originTimeout)
		defer cancel()
		octx = credential.NewContext(octx, t.Access()) // what peers asked for it need
		if m, err := r.fromPeers(octx, d, holders); err == nil {
			return m, nil
		}
		if t.Hosted() && r.peers != nil && r.cluster != nil {
			hctx, cancel := context.WithTimeout(octx, hostedTimeout)
			seeds := slices.DeleteFunc(r.seeds(hctx), func(p peer.ID) bool { return slices.Contains(holders, p) })
			cancel()
			if m, err := r.fromPeersGiven(octx, d, seeds); err == nil {
				return m, nil
			}
		}
		if t.Registry == nil {
			return nil, fmt.Errorf("manifest %s: %w", d, fetch.ErrNoOrigin)
		}
		om, err := r.origin.GetManifest(octx, t.Registry, t.Repo, d.String(), union(accept, oci.ManifestTypes()))
		if err != nil {
			if errors.Is(err, errdefs.ErrDigestMismatch) {
				r.metrics.OriginVerifyFailures.Inc()
				r.log.Error("origin manifest failed verification; discarded", "digest", d, "repo", t.Repo)
			}
			return nil, err
		}
		return r.keep(om.Digest, om.MediaType, om.Body, "origin"), nil
	})
}

// do runs fn once per key at a time, sharing its result with concurrent callers.
func do[T any](g *singleflight.Group, key string, fn func() (T, error)) (T, error) {
	v, err, _ := g.Do(key, func() (any, error) { return fn() })
	if err != nil {
		var zero T
		return zero, err
	}
	return v.(T), nil
}

// stored returns manifest d from the store.
func (r *Resolver) stored(d digest.Digest) (*Manifest, error) {
	body, mt, err := r.st.ReadManifest(d, oci.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	r.st.Touch(d)
	return &Manifest{MediaType: mt, Digest: d, Body: body, Source: "cache"}, nil
}

// fromPeers gets manifest d from a peer, verified by its digest: holders first, if any, then the
// peers that provide it.
func (r *Resolver) fromPeers(ctx context.Context, d digest.Digest, holders []peer.ID) (*Manifest, error) {
	if r.peers == nil {
		return nil, fmt.Errorf("%s: peer-to-peer disabled: %w", d, errdefs.ErrNotFound)
	}
	if m, err := r.fromPeersGiven(ctx, d, holders); err == nil {
		return m, nil
	}
	body, mt, err := r.peers.Manifest(ctx, d)
	if err != nil {
		return nil, err
	}
	return r.keep(d, mt, body, "peer"), nil
}

// fromPeersGiven gets manifest d from the peers given, in order, verified by its digest.
func (r *Resolver) fromPeersGiven(ctx context.Context, d digest.Digest, ps []peer.ID) (*Manifest, error) {
	if len(ps) == 0 {
		return nil, fmt.Errorf("%s: no peer to ask: %w", d, errdefs.ErrNotFound)
	}
	body, mt, err := r.peers.ManifestFrom(ctx, ps, d)
	if err != nil {
		return nil, err
	}
	return r.keep(d, mt, body, "peer"), nil
}

// keep stores a verified manifest and announces it; failing to store costs only the copy.
func (r *Resolver) keep(d digest.Digest, mediaType string, body []byte, source string) *Manifest {
	if err := r.st.PutManifest(d, mediaType, body); err != nil {
		r.log.Error("storing manifest failed", "digest", d, "err", err)
	} else if r.announcer != nil {
		r.announcer.Announce(d)
	}
	return &Manifest{MediaType: mediaType, Digest: d, Body: body, Source: source}
}

func accepts(accept []string, mt string) bool {
	if len(accept) == 0 {
		return true
	}
	for _, a := range accept {
		if a == mt || a == "*/*" {
			return true
		}
	}
	return false
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}
