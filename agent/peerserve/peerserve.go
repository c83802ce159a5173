// Package peerserve is the serving side of the peer protocol: what this node answers its peers
// (transfer.Content and its optional abilities). It serves committed content and blobs still
// being fetched (their verified chunks), chunk maps, the tag records it holds, and, as a
// coordinator, starts origin fetches and resolves tags for the cluster. It never fetches on a
// peer's behalf except when asked as a coordinator. The requesting side is agent/swarm.
package peerserve

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent/access"
	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/resolve"
	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/internal/quota"
	"github.com/shoal-oci/shoal/internal/tags"
	"github.com/shoal-oci/shoal/p2p/transfer"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// Deps are what a Content is built from.
type Deps struct {
	Store    *store.Store
	Pipeline *fetch.Pipeline
	Resolver *resolve.Resolver
	// Upstreams are the registries this node fetches from for the cluster; no other is asked.
	Upstreams *origin.Set
	// Hosted answers peers asking about hosted (pushed) repositories: a seed's; nil otherwise.
	Hosted resolve.HostedTags
	// ChunkSize is the cluster's piece size, the unit of its chunk maps; maps are served in it
	// only.
	ChunkSize int64
	// Coordinated counts origin fetches started for the cluster.
	Coordinated prometheus.Counter
	// Quotas are what each peer may ask of this node as a coordinator (zero fields: defaults).
	Quotas Quotas
	// Access decides which requests for private content are served; nil serves every one.
	Access Access
}

// Quotas bound what one peer can make this node ask the origin, with the node's credentials:
// Pulls starts of origin fetches (a pull of content held or already being fetched is free) and
// Resolves tag resolutions. Past its quota a peer is answered busy and goes to the origin
// itself; the node's own cap on fetches for peers is fetch.Deps.MaxPulls.
type Quotas struct {
	Pulls, Resolves Quota
}

// Quota is a token bucket: Burst requests at once, then PerSecond.
type Quota struct {
	Burst     int
	PerSecond float64
}

// Default quotas. An honest node asks a coordinator to pull only blobs that nobody provides, and
// is charged only when its pull starts the fetch: a burst covers the layers of a few images at
// once; past it the node fetches from the origin itself, as it would without a cluster. Tag
// resolutions are cheap at the origin (a HEAD) and asked once per tag and TTL.
var (
	DefaultPullQuota    = Quota{Burst: 16, PerSecond: 1}
	DefaultResolveQuota = Quota{Burst: 64, PerSecond: 8}
)

// maxQuotaPeers bounds the peers whose buckets are kept at once (more than a node connects to).
const maxQuotaPeers = 4096

func (q Quota) orDefault(d Quota) Quota {
	if q.Burst <= 0 || q.PerSecond <= 0 {
		return d
	}
	return q
}

// Access decides who may read a private repository's content. *access.Checker implements it.
type Access interface {
	Authorize(ctx context.Context, q access.Request) error
	Unnamed(ctx context.Context, d digest.Digest) error
}

// Content answers peers for one node.
type Content struct {
	st          *store.Store
	pipeline    *fetch.Pipeline
	resolver    *resolve.Resolver
	upstreams   *origin.Set
	hosted      resolve.HostedTags
	chunkSize   int64
	coordinated prometheus.Counter
	pulls       *quota.PerKey
	resolves    *quota.PerKey
	access      Access
}

var (
	_ transfer.Content    = (*Content)(nil)
	_ transfer.Holder     = (*Content)(nil)
	_ transfer.Receiver   = (*Content)(nil)
	_ transfer.Puller     = (*Content)(nil)
	_ transfer.Resolver   = (*Content)(nil)
	_ transfer.Authorizer = (*Content)(nil)
)

// New returns a Content.
func New(deps Deps) *Content {
	pq := deps.Quotas.Pulls.orDefault(DefaultPullQuota)
	rq := deps.Quotas.Resolves.orDefault(DefaultResolveQuota)
	return &Content{st: deps.Store, pipeline: deps.Pipeline, resolver: deps.Resolver, upstreams: deps.Upstreams,
		hosted: deps.Hosted, chunkSize: deps.ChunkSize, coordinated: deps.Coordinated, access: deps.Access,
		pulls:    quota.New(pq.PerSecond, pq.Burst, maxQuotaPeers),
		resolves: quota.New(rq.PerSecond, rq.Burst, maxQuotaPeers)}
}

// ErrOverQuota declines a peer's request past its quota: it is answered busy.
var ErrOverQuota = fmt.Errorf("peer over its quota of coordinator requests: %w", errdefs.ErrTooManyRequests)

// charge takes one request of the asking peer from q (a request from no known peer, which the
// protocol server never makes, is not charged).
func charge(ctx context.Context, q *quota.PerKey) bool {
	p, ok := transfer.RemotePeer(ctx)
	return !ok || q.Allow(p.String())
}

// Authorize decides whether a peer's request is served: a private repository's content, tags
// and resolutions go only to a credential its origin accepts for that repository (the one the
// peer forwarded for its client), and a digest asked for under no repository of this node's
// only when this node does not know it as private content.
func (c *Content) Authorize(ctx context.Context, a transfer.Access) error {
	if c.access == nil {
		return nil
	}
	q := access.Request{Repo: a.Repo, Credential: a.Credential}
	switch a.Op {
	case "tag", "resolve":
		if a.Registry == "" {
			return nil // hosted repositories: the role's, not an upstream's
		}
		q.Kind, q.Tag = access.Manifest, a.Tag
	case "pull":
		q.Kind, q.Digest = access.Blob, a.Digest
	default:
		q.Kind, q.Digest = access.Content, a.Digest
	}
	reg, err := c.upstreams.Select(a.Registry)
	if a.Registry == "" || a.Repo == "" || err != nil || reg == nil {
		if q.Kind == access.Content {
			return c.access.Unnamed(ctx, a.Digest)
		}
		if err != nil {
			return err
		}
		return nil
	}
	q.Registry = reg
	return c.access.Authorize(ctx, q)
}

// OpenContent serves committed content, or a blob this node is still fetching: peers then read
// its verified bytes as they land (a read waits for them).
func (c *Content) OpenContent(d digest.Digest) (transfer.Blob, error) {
	b, err := c.st.OpenBlob(d, "cache")
	if err == nil {
		return b, nil
	}
	if in, ok := c.pipeline.OpenInFlight(d); ok {
		return in, nil
	}
	return nil, err
}

// ChunkMap answers only in the node's own chunk size (the cluster's, by configuration): a map
// in another size would cost a full read of the blob per request.
func (c *Content) ChunkMap(ctx context.Context, d digest.Digest, chunkSize int64) (*chunks.Map, error) {
	if chunkSize != c.chunkSize {
		return nil, fmt.Errorf("chunk size %d: this node uses %d: %w", chunkSize, c.chunkSize, errdefs.ErrUnsupported)
	}
	if in, ok := c.pipeline.OpenInFlight(d); ok {
		m := in.PartialMap()
		_ = in.Close() // only releases the fetch
		if m != nil {
			return m, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, chunkMapTimeout)
	defer cancel()
	return c.st.ChunkMap(ctx, d, chunkSize)
}

// chunkMapTimeout bounds computing a committed blob's chunk map (a full read of it).
const chunkMapTimeout = 30 * time.Second

// Holding reports the chunks of a blob in flight that this node holds, for peers watching it.
func (c *Content) Holding(d digest.Digest, chunkSize int64) (*chunks.Set, <-chan struct{}, bool) {
	if chunkSize != c.chunkSize {
		return nil, nil, false
	}
	in, ok := c.pipeline.OpenInFlight(d)
	if !ok {
		return nil, nil, false
	}
	defer in.Close()
	return in.Holding()
}

// Receiving reports the chunks of a blob in flight that this node is receiving, which peers may
// ask for and get as each one verifies here (cut-through).
func (c *Content) Receiving(d digest.Digest, chunkSize int64) *chunks.Set {
	if chunkSize != c.chunkSize {
		return nil
	}
	in, ok := c.pipeline.OpenInFlight(d)
	if !ok {
		return nil
	}
	defer in.Close()
	return in.Receiving()
}

// TagRecords are the resolutions of a tag this node recorded, the newest tags.MaxPerTag.
func (c *Content) TagRecords(registry, repo, tag string) ([]tags.Record, error) {
	recs, err := c.st.Tags().List(tags.Prefix(registry, repo, tag))
	if err != nil {
		return nil, err
	}
	out := make([]tags.Record, 0, len(recs))
	for _, r := range recs {
		out = append(out, r)
	}
	// A store written before records were capped may hold more: the newest fit the answer.
	slices.SortFunc(out, func(a, b tags.Record) int { return b.Resolved.Compare(a.Resolved) })
	return out[:min(len(out), tags.MaxPerTag)], nil
}

// Pull starts fetching d from the origin for the cluster, as its coordinator, and returns once
// the fetch is under way (or the content is held). Only configured registries are fetched from.
// An empty registry names the hosted namespace, as in every operation of the peer protocol: it
// has no origin, so there is nothing to pull.
func (c *Content) Pull(ctx context.Context, registry, repo string, d digest.Digest) error {
	if registry == "" {
		return fmt.Errorf("%s: hosted repositories have no origin: %w", d, errdefs.ErrNotFound)
	}
	reg, err := c.upstreams.Select(registry)
	if err != nil {
		return err
	}
	if reg == nil {
		return fmt.Errorf("%s: no origin for %s here: %w", d, registry, errdefs.ErrNotFound)
	}
	if !names.ValidRepository(repo) {
		return fmt.Errorf("repository %q: %w", repo, errdefs.ErrInvalid)
	}
	if _, err := c.st.Stat(d); err == nil {
		return nil
	}
	if !c.pipeline.InFlight(d) && !charge(ctx, c.pulls) {
		return fmt.Errorf("pull of %s: %w", d, ErrOverQuota)
	}
	c.coordinated.Inc()
	return c.pipeline.Pull(ctx, fetch.Target{Registry: reg, Repo: repo, Credential: asking(ctx)}, d)
}

// Resolve answers a peer asking this node, the tag's coordinator, what a tag names. An empty
// registry asks about this node's hosted repositories (a seed's pushed images).
func (c *Content) Resolve(ctx context.Context, registry, repo, tag string, accept []string) (tags.Record, error) {
	if !names.ValidTag(tag) || !names.ValidRepository(repo) {
		return tags.Record{}, fmt.Errorf("%q:%q: %w", repo, tag, errdefs.ErrInvalid)
	}
	if registry == "" {
		if c.hosted != nil {
			if rec, ok := c.hosted.HostedTag(repo, tag); ok {
				return rec, nil
			}
		}
		return tags.Record{}, fmt.Errorf("%s:%s: not hosted here: %w", repo, tag, errdefs.ErrNotFound)
	}
	reg, err := c.upstreams.Select(registry)
	if err != nil {
		return tags.Record{}, err
	}
	if reg == nil {
		return tags.Record{}, fmt.Errorf("%s:%s: no origin for %s here: %w", repo, tag, registry, errdefs.ErrNotFound)
	}
	if !charge(ctx, c.resolves) {
		return tags.Record{}, fmt.Errorf("resolve of %s:%s: %w", repo, tag, ErrOverQuota)
	}
	res, err := c.resolver.Tag(ctx, fetch.Target{Registry: reg, Repo: repo, Credential: asking(ctx)}, tag, accept, false)
	if err != nil {
		return tags.Record{}, err
	}
	// The time the origin was last asked, so that a stale answer stays marked stale.
	return res.Record(), nil
}

// asking is the credential the asking peer forwarded for its client, which Authorize checked at
// the origin: a coordinator with no credentials of its own fetches or resolves a private
// repository for the peer with it, as the node does for a local client.
func asking(ctx context.Context) credential.Credential {
	a, _ := credential.FromContext(ctx)
	return a.Credential
}
