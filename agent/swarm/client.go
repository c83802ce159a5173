// Package swarm is the client side of the peer protocol: it finds the peers that hold a digest,
// fetches blobs from them as verified chunks from many at once (the pipeline's peer Source),
// gets manifests, sizes and tag records from them (through agent/swarm/metadata), and blames
// peers that sent bad bytes (agent/swarm/penalty).
// The serving side is agent/peerserve.
package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/swarm/metadata"
	"github.com/shoal-oci/shoal/agent/swarm/penalty"
	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/tags"
	"github.com/shoal-oci/shoal/internal/throttle"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// Router is what the swarm needs of the peer network: content routing, the digest's
// coordinator, and connection protection. *p2p.Node implements it.
type Router interface {
	FindProviders(ctx context.Context, d digest.Digest) ([]peer.AddrInfo, error)
	Coordinator(ctx context.Context, d digest.Digest) (p peer.ID, self bool, err error)
	Peers() []peer.ID
	// KnownSeeds are the authorized seeds this node knows of, without a lookup; ID is this node.
	KnownSeeds() []peer.ID
	ID() peer.ID
	Protect(p peer.ID, tag string)
	Unprotect(p peer.ID, tag string)
}

// Metrics are the swarm's instruments, created and registered by the node.
type Metrics struct {
	// Bytes counts blob bytes received from peers; VerifyFailures counts peer content that failed
	// verification, and PeerVerifyFailures the same by peer ID; Providers observes how many
	// peers supplied chunks of one fetch.
	Bytes              prometheus.Counter
	VerifyFailures     prometheus.Counter
	PeerVerifyFailures *prometheus.CounterVec
	Providers          prometheus.Observer
}

// Deps are what a Client is built from.
type Deps struct {
	Router   Router
	Transfer *transfer.Client
	// Download paces what is received from peers.
	Download *throttle.Limiter
	// ChunkSize is what one chunk request asks for (a multiple of PieceSize), and the most a
	// provider is asked for a blob of unknown size.
	ChunkSize int64
	// PieceSize is the cluster's piece size, the unit of its chunk maps: each piece of a chunk is
	// verified and landed as it arrives (zero: ChunkSize).
	PieceSize int64
	// Deadline is how slowly a peer may deliver a chunk (zero fields: the defaults).
	Deadline Deadline
	Log      *slog.Logger
	Metrics  Metrics
}

// Client asks peers for content.
type Client struct {
	router    Router
	transfer  *transfer.Client
	download  *throttle.Limiter
	chunkSize int64
	pieceSize int64
	span      int // pieces per chunk
	deadline  Deadline
	log       *slog.Logger
	metrics   Metrics
	penalties *penalty.Box
	meta      *metadata.Asker
	// chunkPool recycles chunk-sized buffers.
	chunkPool sync.Pool
	// chunkSlots holds one token per swarm chunk request open, nodeInFlight at most.
	chunkSlots chan struct{}
}

// New returns a Client.
func New(deps Deps) *Client {
	dl := deps.Deadline
	if dl.Grace <= 0 {
		dl.Grace = DefaultGrace
	}
	if dl.MinRate <= 0 {
		dl.MinRate = DefaultMinRate
	}
	if dl.Stall <= 0 {
		dl.Stall = DefaultStall
	}
	ps := deps.PieceSize
	if ps <= 0 || ps > deps.ChunkSize {
		ps = deps.ChunkSize
	}
	span := 1
	if ps > 0 {
		span = max(1, int(deps.ChunkSize/ps))
	}
	c := &Client{router: deps.Router, transfer: deps.Transfer, download: deps.Download, chunkSize: deps.ChunkSize,
		pieceSize: ps, span: span, deadline: dl, log: deps.Log, metrics: deps.Metrics, penalties: &penalty.Box{},
		chunkSlots: make(chan struct{}, nodeInFlight)}
	c.meta = &metadata.Asker{Transfer: deps.Transfer, Penalties: c.penalties, Blame: c.blame}
	return c
}

const (
	// lookupTimeout bounds a provider lookup: past it the pipeline goes on to the origin.
	lookupTimeout = 2 * time.Second
	// PenaltyDuration is how long a peer that sent bytes failing verification is ignored.
	PenaltyDuration = penalty.Duration
	// maxManifestProviders bounds the providers asked for a manifest, so that unresponsive ones
	// cannot eat the time the origin fallback needs.
	maxManifestProviders = 3
	// coordinatorTimeout bounds asking the coordinator to fetch a blob: past it, this node goes
	// to the origin itself.
	coordinatorTimeout = 5 * time.Second
	// mapTimeout bounds asking a provider for its chunk map.
	mapTimeout = 5 * time.Second
)

// Deadline is the time a peer gets to deliver a chunk: Grace for the request itself, then at
// least MinRate bytes per second. A slower peer is dropped from the fetch, and the chunk is
// taken elsewhere. Stall is how long a dead swarm is waited for: no chunk landed and no provider
// gained one (see swarmFetch.stalled); a slow swarm, whose providers gain chunks, is waited for
// up to 4 × Stall without a chunk landing.
type Deadline struct {
	Grace   time.Duration
	MinRate int64
	Stall   time.Duration
}

// The default Deadline: 10 s of grace, then 256 KiB/s; a swarm is dead after 30 s without
// progress.
const (
	DefaultGrace   = 10 * time.Second
	DefaultMinRate = 256 << 10
	DefaultStall   = 30 * time.Second
)

// For is the time to deliver n bytes.
func (d Deadline) For(n int64) time.Duration {
	return d.Grace + time.Duration(n*int64(time.Second)/d.MinRate)
}

// blame puts p in the penalty box for sending content of d that failed verification.
func (c *Client) blame(p peer.ID, d digest.Digest, err error) {
	c.penalties.Penalize(p)
	c.metrics.VerifyFailures.Inc()
	c.metrics.PeerVerifyFailures.WithLabelValues(p.String()).Inc()
	c.log.Error("peer sent content failing verification; ignoring it for a while",
		"peer", p, "digest", d, "err", err, "penalty", PenaltyDuration)
}

// Providers looks up peers holding d, without the ones in the penalty box. It fails with an
// error wrapping errdefs.ErrNotFound when there is none.
func (c *Client) Providers(ctx context.Context, d digest.Digest) ([]peer.AddrInfo, error) {
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	found, err := c.router.FindProviders(lctx, d)
	var out []peer.AddrInfo
	for _, p := range found {
		if c.penalties.Usable(d, p.ID) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		if err == nil {
			err = fmt.Errorf("%s: no peer provides it: %w", d, errdefs.ErrNotFound)
		}
		return nil, err
	}
	return out, nil
}

// Source is the pipeline's peer source: small blobs whole, verified by their digest; larger ones
// by swarming their chunks, each verified against the blob's chunk map.
func (c *Client) Source() fetch.Source { return peerSource{c} }

type peerSource struct{ c *Client }

func (peerSource) Name() string { return "peer" }

func (s peerSource) FetchBlob(ctx context.Context, t fetch.Target, d digest.Digest, _, size int64) (io.Closer, int64, error) {
	c := s.c
	// Every request of this fetch names the repository and carries the client's credential:
	// peers serve a private repository's content only to a credential its origin accepts.
	ctx = credential.NewContext(ctx, t.Access())
	if t.Registry != nil && c.penalties.ExcludedFor(d, penalty.AnyPeer) {
		// A fetch of d failed lately on peers' chain states (StatesForged): any peer, the
		// coordinator included, may relay them still. With no origin, peers are all there is.
		return nil, 0, fmt.Errorf("%s: peers' chunk maps of it failed verification lately; taking it from the origin: %w", d, fetch.ErrNextSource)
	}
	provs, err := c.Providers(ctx, d)
	if err != nil && ctx.Err() == nil {
		// Nobody found, or the lookup timed out (a loaded DHT): either way the coordinator, not
		// this node, goes to the origin.
		provs, err = c.viaCoordinator(ctx, t, d)
	}
	if err != nil {
		return nil, 0, err
	}
	sw := newSwarmFetch(c, d, provs, size, t.Access())
	// The short path: ask the first provider for the first chunk straight away. A blob of one
	// chunk (manifests' configs, small layers) is then done, verified by its digest, without a
	// chunk map round trip. A blob known to be larger goes to its map first: its pieces then land
	// (and reach the local client) one by one as they verify, not after a whole chunk.
	if size < 0 || size <= c.chunkSize {
		if small, n, ok := sw.firstChunk(ctx, provs[0].ID); ok {
			return small, n, nil
		}
	}
	if size < 0 {
		// Only a blob of one chunk, whole, can be taken: the first provider may be gone (its
		// record outlives it) or lie, so ask the next ones the same way.
		for _, p := range provs[1:min(len(provs), maxWholeTries)] {
			if small, n, ok := sw.firstChunk(ctx, p.ID); ok {
				return small, n, nil
			}
		}
		// A larger blob needs its size bound first (fetch.Sizer): a peer's map could claim any.
		_ = sw.Close()
		return nil, 0, fmt.Errorf("%s: its size is not known from the origin, a seed or a manifest; not taking more than a chunk of it from peers: %w", d, errdefs.ErrUnavailable)
	}
	if err := sw.loadMap(ctx); err != nil {
		_ = sw.Close()
		return nil, 0, err
	}
	return sw, sw.m.Size, nil
}

// maxWholeTries bounds the providers asked for a blob whose size is not known, each for the blob
// whole in one chunk.
const maxWholeTries = 8

// viaCoordinator handles a blob nobody provides: the digest's coordinator fetches it from the
// origin once for the cluster and serves it as it arrives, so a thousand nodes asking at once
// cost the origin one fetch. This node goes to the origin itself only when it is the coordinator
// (or alone), or when the coordinator does not answer in time: then the error wraps
// fetch.ErrNextSource.
func (c *Client) viaCoordinator(ctx context.Context, t fetch.Target, d digest.Digest) ([]peer.AddrInfo, error) {
	if t.Hosted() {
		// The hosted namespace has no origin anywhere: a coordinator has nothing to pull from.
		// Hosted content lives on the seeds, and one that took a push a moment ago may not be
		// found in the DHT yet: ask them (their bytes are verified like anyone's).
		var seeds []peer.AddrInfo
		for _, p := range c.router.KnownSeeds() {
			if p != c.router.ID() {
				seeds = append(seeds, peer.AddrInfo{ID: p})
			}
		}
		if len(seeds) > 0 {
			return seeds, nil
		}
		return nil, fmt.Errorf("%s: no peer provides it, and hosted content has no origin: %w", d, errdefs.ErrNotFound)
	}
	cctx, cancel := context.WithTimeout(ctx, coordinatorTimeout)
	defer cancel()
	co, self, err := c.router.Coordinator(cctx, d)
	if err != nil {
		c.log.Info("no coordinator found; going to the origin", "digest", d, "err", err)
		return nil, fmt.Errorf("%s: no coordinator: %v: %w", d, err, fetch.ErrNextSource)
	}
	if self {
		return nil, fmt.Errorf("%s: this node coordinates it: %w", d, fetch.ErrNextSource)
	}
	if err := c.transfer.Pull(cctx, co, t.Host(), t.Repo, d); err != nil {
		// Busy (this node's quota at the coordinator, or its cap on fetches for peers) is
		// answered at once: the origin is the next source, never a wait on the coordinator.
		c.log.Info("coordinator did not take the fetch; going to the origin", "digest", d, "coordinator", co,
			"busy", errors.Is(err, transfer.ErrBusy), "err", err)
		return nil, fmt.Errorf("%s: coordinator %s: %v: %w", d, co, err, fetch.ErrNextSource)
	}
	c.log.Debug("coordinator is fetching the blob for the cluster", "digest", d, "coordinator", co)
	return []peer.AddrInfo{{ID: co}}, nil
}

// StatesForged keeps peers from being asked for the blob for a while (see fetch.StateSource), and
// returns the providers whose maps gave the states this fetch left. Which of them forged the
// states cannot be told (an honest peer relays the states it was given), and neither can the
// other peers relaying them: every node that adopted the forged map serves it while its own
// fetch goes on, the coordinator too when its fetch is from peers. So no peer is asked for the
// digest while it can come from the origin, and the client's retry goes there.
func (s *swarmFetch) StatesForged() []string {
	ps := s.stateSuppliers()
	if len(ps) > 0 {
		s.c.penalties.ExcludeFor(s.d, append(ps, penalty.AnyPeer))
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// BlobSizeFrom asks the given peers, in order, for a blob's size (metadata.Asker.BlobSize).
func (c *Client) BlobSizeFrom(ctx context.Context, ps []peer.ID, d digest.Digest) (int64, error) {
	return c.meta.BlobSize(ctx, ps, d)
}

// blameSize blames p for claiming that d has another size than the bound one, and keeps it out
// of d's fetches: the bound size came from metadata the node trusts, so the claim is a lie.
func (c *Client) blameSize(p peer.ID, d digest.Digest, claimed, bound int64) {
	c.penalties.ExcludeFor(d, []peer.ID{p})
	c.blame(p, d, fmt.Errorf("claims %d bytes, the bound size is %d", claimed, bound))
}

// Manifest fetches a manifest by digest from its providers (metadata.Asker.Manifest, the first
// maxManifestProviders of them).
func (c *Client) Manifest(ctx context.Context, d digest.Digest) (body []byte, mediaType string, err error) {
	provs, err := c.Providers(ctx, d)
	if err != nil {
		return nil, "", err
	}
	if len(provs) > maxManifestProviders {
		provs = provs[:maxManifestProviders]
	}
	ps := make([]peer.ID, len(provs))
	for i, p := range provs {
		ps[i] = p.ID
	}
	return c.meta.Manifest(ctx, ps, d)
}

// ManifestFrom fetches a manifest by digest from the given peers, in order. The caller chooses
// whom to ask: the seeds, for hosted content that no provider record names yet.
func (c *Client) ManifestFrom(ctx context.Context, ps []peer.ID, d digest.Digest) (body []byte, mediaType string, err error) {
	return c.meta.Manifest(ctx, ps, d)
}

// TagRecords asks peers what a tag resolved to (metadata.Asker.TagRecords).
func (c *Client) TagRecords(ctx context.Context, peers []peer.ID, registry, repo, tag string) []tags.Record {
	return c.meta.TagRecords(ctx, peers, registry, repo, tag)
}

// chunkBuf returns a buffer of n bytes, from a pool when n is the chunk size: a swarm of
// transfers otherwise leaves a trail of 4 MiB garbage that the collector reaches late.
func (c *Client) chunkBuf(n int64) []byte {
	if n == c.chunkSize {
		if b, ok := c.chunkPool.Get().(*[]byte); ok {
			return *b
		}
	}
	return make([]byte, n)
}

func (c *Client) putChunkBuf(b []byte) {
	if int64(cap(b)) == c.chunkSize {
		b = b[:cap(b)]
		c.chunkPool.Put(&b)
	}
}

// copyBufSize is the unit of landing a chunk's bytes in the file.
const copyBufSize = 256 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
