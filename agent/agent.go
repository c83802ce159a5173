// Package agent is a Shoal node: it opens the content store and composes the node's parts
// (the fetch pipeline, the swarm that asks peers, the serving side of the peer protocol, tag and
// manifest resolution, garbage collection) and serves them over HTTP: /v2 for the container
// runtimes, metrics, health, status and the admin endpoints. Each part is a package beneath this
// one with its own dependencies; the agent wires them and owns their lifetimes. A seed is built
// from the same parts (package seed). docs/architecture.md has the package map.
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent/access"
	"github.com/shoal-oci/shoal/agent/descriptors"
	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/gc"
	"github.com/shoal-oci/shoal/agent/peerserve"
	"github.com/shoal-oci/shoal/agent/resolve"
	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/agent/swarm"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/httpguard"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/internal/reference"
	"github.com/shoal-oci/shoal/internal/throttle"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// Config is an agent's configuration, filled from flags by cmd/shoal.
type Config struct {
	// Listen is the address of the /v2, metrics and health endpoints.
	Listen string
	// MetricsListen, when set, serves /metrics, /healthz and /readyz on a second address as well
	// (and no /v2 there), so that /v2 can stay on loopback while Prometheus and the kubelet's
	// probes reach the pod's address.
	MetricsListen string
	// DataDir holds the content store.
	DataDir string
	// Registries are the upstream registry URLs, or "name=URL" aliases (origin.ParseUpstream);
	// the first serves requests without ns. None means no origin: content and tags come from the
	// cluster (its seeds) alone.
	Registries []string
	// DockerConfig is a docker config.json with credentials for the upstreams ("" = anonymous).
	DockerConfig string
	// TagTTL is how long a tag resolution is used without asking the origin again.
	TagTTL time.Duration
	// StoreMaxBytes is the store's high watermark: past it, least recently used content is
	// evicted down to 90% of it. Zero means no limit.
	StoreMaxBytes int64
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// OriginOptions are extra options for the origin client (tests shorten its timeouts).
	OriginOptions []origin.Option
	// P2P configures the peer-to-peer node; nil runs a plain mirror.
	P2P *p2p.Config
	// ChunkSize is what one swarm request asks a peer for (default chunks.DefaultSize), in whole
	// pieces.
	ChunkSize int64
	// PieceSize is the unit of verified peer transfer, the states of chunk maps: each piece is
	// verified, passed to clients and offered to peers as it arrives. It must be the same on every
	// node of a cluster (default chunks.DefaultPieceSize, or ChunkSize if smaller).
	PieceSize int64
	// DebugListen, when set, serves net/http/pprof there (keep it on loopback).
	DebugListen string
	// MaxDownloadRate and MaxUploadRate cap the node's bytes per second received from peers
	// and origins, and sent to peers; zero means unlimited. Local clients are not limited.
	MaxDownloadRate, MaxUploadRate int64
	// AdminToken, when set, is required (as a bearer token) by the admin endpoints (/shoal/v1)
	// and the push API; when empty they are open only while the agent listens on loopback.
	AdminToken string
	// AllowedHosts are the host names, besides addresses, localhost and the name in Listen, that
	// the admin endpoints and the push API accept in a request's Host (DNS rebinding).
	AllowedHosts []string
	// TLSCertFile and TLSKeyFile, when set, make Listen serve HTTPS with this certificate (PEM).
	TLSCertFile, TLSKeyFile string
	// PeerDeadline is how slowly a peer may deliver a chunk before it is dropped from a fetch,
	// and how long a swarm without progress is waited for before the origin resumes (zero
	// fields: swarm.DefaultGrace, swarm.DefaultMinRate, swarm.DefaultStall).
	PeerDeadline PeerDeadline
	// HostedRegistry is the registry name of the hosted namespace, the repositories pushed to
	// the cluster's seeds (default DefaultHostedRegistry): a request whose ns names it is served
	// from the seeds, and no other ns ever is. A registry host[:port] that is none of Registries.
	HostedRegistry string
	// MaxCoordinatedFetches caps the origin fetches this node runs at once for other nodes, as
	// their coordinator; more are answered busy and the asking node fetches itself (0:
	// DefaultMaxCoordinatedFetches). Each peer also has a quota of them (peerserve.Quotas).
	MaxCoordinatedFetches int
	// NotFoundTTL is how long the origin's "no such blob" is remembered per repository and digest
	// (0: fetch.DefaultNotFoundTTL; negative: not at all).
	NotFoundTTL time.Duration
	// NodeWideCredentials are registry hosts for which the node's own DockerConfig credentials
	// serve private repositories to every local client, without a credential of its own. Peers
	// always need a credential the origin accepts.
	NodeWideCredentials []string
	// PrivateAccessTTL is how long the origin's acceptance of a client credential for a private
	// repository is used before it is asked again (default access.DefaultTTL).
	PrivateAccessTTL time.Duration
	// PrivateOfflineWindow is how long after the origin last accepted a credential it is still
	// served while the origin cannot be reached (default access.DefaultOfflineWindow).
	PrivateOfflineWindow time.Duration
	// FirstByteTimeout bounds how long a /v2 pull (GET, HEAD) waits for its answer to begin:
	// past it the client gets 503 UNAVAILABLE, which sends a runtime to its next host (0:
	// DefaultFirstByteTimeout; negative: no bound).
	FirstByteTimeout time.Duration
	// WriteStallTimeout is how long a response may wait on a client that takes no bytes before
	// its connection is closed, on every listener (0: httpbound.DefaultStallTimeout).
	WriteStallTimeout time.Duration
	// MaxConnections caps the connections open at once on Listen; past it a connection is
	// answered 503 and closed (0: DefaultMaxConnections; negative: no cap).
	MaxConnections int
}

// DefaultFirstByteTimeout is the default of Config.FirstByteTimeout: longer than a tag's
// slowest working path (its coordinator, then the origin, then the manifest from peers), and
// short enough that a runtime waiting on this node goes to its next host within the minute.
const DefaultFirstByteTimeout = 30 * time.Second

// DefaultMaxConnections is the default of Config.MaxConnections: far above what the runtimes of
// one node open, far below the descriptors the process may hold.
const DefaultMaxConnections = 1024

// DefaultHostedRegistry is the hosted namespace's registry name when none is configured: a name
// under .local, which no public registry has.
const DefaultHostedRegistry = "shoal.local"

// DefaultMaxCoordinatedFetches is the default of Config.MaxCoordinatedFetches: well above the
// distinct blobs of a rollout that one coordinator fetches at once, and a bound on what members
// flooding it with pulls can make it fetch.
const DefaultMaxCoordinatedFetches = 64

// PeerDeadline is the time a peer gets to deliver a chunk: Grace for the request, then at least
// MinRate bytes per second; and Stall, how long a swarm without progress is waited for.
type PeerDeadline = swarm.Deadline

// DefaultTagTTL keeps tag resolutions for a short time, so that a burst of pulls of one tag costs
// the origin one request, while a pushed tag is seen within seconds.
const DefaultTagTTL = 30 * time.Second

// Keeper reports content that garbage collection must keep besides pins (a seed's hosted
// repositories).
type Keeper interface {
	Referenced(d digest.Digest) bool
}

// Option adds a dependency that a role brings to the node.
type Option func(*options)

type options struct {
	store  *store.Store
	hosted resolve.HostedTags
	keep   Keeper
}

// WithStore runs the agent on a store the caller opened (with OpenStore) and closes after the
// agent: a seed, whose hosted repositories share it.
func WithStore(st *store.Store) Option { return func(o *options) { o.store = st } }

// WithHostedTags answers what the tags of this node's hosted repositories name, to local
// resolution and to peers.
func WithHostedTags(h resolve.HostedTags) Option { return func(o *options) { o.hosted = h } }

// WithKeeper keeps what k references from garbage collection.
func WithKeeper(k Keeper) Option { return func(o *options) { o.keep = k } }

// Agent is a running node. It implements registryapi.Backend.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	store     *store.Store
	ownStore  bool
	upstreams *origin.Set
	origin    *origin.Client
	registry  *prometheus.Registry
	metrics   *metrics

	pipeline  *fetch.Pipeline
	records   *descriptors.Index
	sizes     *sizer
	resolver  *resolve.Resolver
	access    *access.Checker
	gc        *gc.Collector
	announcer *announcer

	// Peer-to-peer parts; nil when P2P is off.
	node  *p2p.Node
	swarm *swarm.Client

	// v2 is the agent's own /v2 server, built by the first Handler call.
	v2     *registryapi.Server
	v2Once sync.Once

	// started is when New returned, for the grace given to a node that has not joined yet.
	started time.Time
	// exposed is set when the agent listens beyond loopback: admin endpoints then need a token.
	exposed bool
	// hosts is the Host allowlist of the admin endpoints and the push API.
	hosts *httpguard.Hosts

	mu      sync.Mutex
	closing bool
	closed  bool
	// serving is set once the HTTP server accepts requests (ServeHandler): /readyz waits for it.
	serving bool
}

// OpenStore opens the store of cfg's data directory as New would.
func OpenStore(cfg Config) (*store.Store, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("agent: a data directory is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := store.Open(cfg.DataDir, store.WithLogger(log), store.WithChunkSize(cfg.pieceSize()), store.WithLimit(cfg.StoreMaxBytes))
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return st, nil
}

// pieceSize is the cluster's piece size: PieceSize, by default chunks.DefaultPieceSize, and never
// more than the chunk size.
func (cfg Config) pieceSize() int64 {
	cs := cfg.ChunkSize
	if cs <= 0 {
		cs = chunks.DefaultSize
	}
	ps := cfg.PieceSize
	if ps <= 0 {
		ps = chunks.DefaultPieceSize
	}
	return min(ps, cs)
}

// New opens the store (unless given one) and builds the agent. Close releases it.
func New(cfg Config, opts ...Option) (*Agent, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("agent: a data directory is required")
	}
	if cfg.TagTTL <= 0 {
		cfg.TagTTL = DefaultTagTTL
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = chunks.DefaultSize
	}
	cfg.PieceSize = cfg.pieceSize()
	if cfg.MaxCoordinatedFetches <= 0 {
		cfg.MaxCoordinatedFetches = DefaultMaxCoordinatedFetches
	}
	if cfg.NotFoundTTL == 0 {
		cfg.NotFoundTTL = fetch.DefaultNotFoundTTL
	}
	if cfg.FirstByteTimeout == 0 {
		cfg.FirstByteTimeout = DefaultFirstByteTimeout
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
		cfg.Logger = log
	}
	ups := origin.EmptySet() // no origin: a site that runs on its seeds
	if len(cfg.Registries) > 0 {
		var err error
		if ups, err = origin.NewSet(cfg.Registries); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	if cfg.HostedRegistry == "" {
		cfg.HostedRegistry = DefaultHostedRegistry
	}
	if err := checkHostedRegistry(cfg.HostedRegistry, ups); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	cfg.HostedRegistry = reference.CanonicalHost(cfg.HostedRegistry)
	hosts, err := httpguard.NewHosts(cfg.Listen, cfg.AllowedHosts)
	if err != nil {
		return nil, fmt.Errorf("agent: allowed host %w", err)
	}
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	originOpts := []origin.Option{origin.WithObserver(m), origin.WithUserAgent("shoal")}
	if cfg.DockerConfig != "" {
		originOpts = append(originOpts, origin.WithDockerConfig(cfg.DockerConfig))
	}
	oc, err := origin.NewClient(append(originOpts, cfg.OriginOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	st, own := o.store, false
	if st == nil {
		if st, err = OpenStore(cfg); err != nil {
			return nil, err
		}
		own = true
	}
	records, err := descriptors.Open(cfg.DataDir, 0)
	if err != nil {
		if own {
			st.Close()
		}
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{cfg: cfg, log: log, store: st, ownStore: own, upstreams: ups, origin: oc, registry: reg, metrics: m,
		records: records, started: time.Now(), hosts: hosts}
	a.access, err = access.New(access.Deps{Origin: oc, Upstreams: ups, Records: newListings(records), Decisions: m.accessDecisions,
		Log: log.With("component", "access")},
		access.Config{NodeWide: cfg.NodeWideCredentials, TTL: cfg.PrivateAccessTTL, OfflineWindow: cfg.PrivateOfflineWindow,
			StateFile: filepath.Join(cfg.DataDir, "private-repos.json")})
	if err != nil {
		a.closeStore()
		return nil, fmt.Errorf("agent: %w", err)
	}
	download := throttle.New(cfg.MaxDownloadRate)
	originSrc := fetch.NewOriginSource(oc, download, m.fetchedBytes.WithLabelValues("origin"), log).
		RememberNotFound(cfg.NotFoundTTL)
	a.sizes = &sizer{records: records, origin: originSrc}
	sources := []fetch.Source{originSrc}
	var peers resolve.Peers
	var cluster resolve.Cluster
	if cfg.P2P != nil {
		pc := *cfg.P2P
		pc.DataDir = cfg.DataDir
		pc.Logger = log.With("component", "p2p")
		pc.Registerer = reg
		node, err := p2p.New(pc)
		if err != nil {
			a.closeStore()
			return nil, fmt.Errorf("agent: %w", err)
		}
		tc := transfer.NewClient(node.Host())
		a.node = node
		a.announcer = newAnnouncer(node, log)
		a.swarm = swarm.New(swarm.Deps{Router: node, Transfer: tc, Download: download, ChunkSize: cfg.ChunkSize,
			PieceSize: cfg.PieceSize, Deadline: cfg.PeerDeadline, Log: log, Metrics: m.swarm()})
		sources = []fetch.Source{a.swarm.Source(), originSrc}
		a.sizes.node, a.sizes.swarm = node, a.swarm
		peers, cluster = a.swarm, nodeCluster{node: node, transfer: tc}
	}
	a.gc = gc.New(st, cfg.StoreMaxBytes, keep(st, o.keep), a.withdraw, m.evictedBytes, log)
	var ann fetch.Announcer
	if a.announcer != nil {
		ann = a.announcer
	}
	a.pipeline = fetch.New(fetch.Deps{Store: st, Sources: sources, Origin: originSrc, Sizes: a.sizes, Announcer: ann,
		Collector: a.gc, Download: download, ChunkSize: cfg.PieceSize, MaxPulls: cfg.MaxCoordinatedFetches,
		Log: log, Metrics: m.fetch()})
	var resAnn resolve.Announcer
	if a.announcer != nil {
		resAnn = a.announcer
	}
	a.resolver = resolve.New(resolve.Deps{Store: st, Origin: oc, Peers: peers, Cluster: cluster, Hosted: o.hosted,
		Announcer: resAnn, Recorder: records, TagTTL: cfg.TagTTL, Started: a.started, Log: log, Metrics: m.resolve()})
	if a.node != nil {
		content := peerserve.New(peerserve.Deps{Store: st, Pipeline: a.pipeline, Resolver: a.resolver, Upstreams: ups,
			Hosted: o.hosted, ChunkSize: cfg.PieceSize, Coordinated: m.coordinated, Access: a.access})
		// The blobs whose chunks this node alone may hold, which it sends about once each: all of
		// a seed's (hosted repositories, preheated images), and a fetch from the origin.
		original := a.pipeline.FromOrigin
		if o.hosted != nil {
			original = func(digest.Digest) bool { return true }
		}
		transfer.NewServer(a.node.Host(), content, log.With("component", "transfer"), m,
			transfer.WithUploadLimit(throttle.New(cfg.MaxUploadRate)),
			transfer.WithUploadSlots(transfer.UploadSlotsFor(cfg.MaxUploadRate)),
			transfer.WithSuperSeeding(cfg.PieceSize, cfg.ChunkSize, original))
	}
	m.registerStore(reg, st)
	return a, nil
}

// withdraw stops advertising evicted content.
func (a *Agent) withdraw(d digest.Digest) {
	if a.announcer != nil {
		a.announcer.Withdraw(d)
	}
}

// Store returns the agent's content store.
func (a *Agent) Store() *store.Store { return a.store }

// Blobs returns the fetch pipeline.
func (a *Agent) Blobs() *fetch.Pipeline { return a.pipeline }

// Descriptors returns the node's records of what the manifests it served list: blob sizes, and
// the repositories listing each digest.
func (a *Agent) Descriptors() *descriptors.Index { return a.records }

// Manifests returns tag and manifest resolution.
func (a *Agent) Manifests() *resolve.Resolver { return a.resolver }

// Node returns the p2p node, or nil when peer-to-peer is off.
func (a *Agent) Node() *p2p.Node { return a.node }

// Logger returns the agent's logger.
func (a *Agent) Logger() *slog.Logger { return a.log }

// Gatherer exposes the agent's metrics registry (for the demo and tests).
func (a *Agent) Gatherer() prometheus.Gatherer { return a.registry }

// Registerer is where a role registers its own metrics.
func (a *Agent) Registerer() prometheus.Registerer { return a.registry }

// Announce advertises committed content to the cluster, in the background.
func (a *Agent) Announce(d digest.Digest) {
	if a.announcer != nil {
		a.announcer.Announce(d)
	}
}

// Target maps a registry name and a repository to their namespace. The hosted registry
// (Config.HostedRegistry) is the hosted namespace; "" is the first upstream, or the hosted
// namespace on a node with no upstream; any other name is an upstream: one of the configured
// registries, or, on a node with none, one it has no origin for (its content comes from the
// cluster alone). An unconfigured registry is an error wrapping errdefs.ErrNotConfigured,
// found without I/O.
func (a *Agent) Target(registry, repo string) (fetch.Target, error) {
	if a.IsHosted(registry) || (registry == "" && len(a.upstreams.Registries()) == 0) {
		return fetch.Target{Repo: repo}, nil
	}
	reg, err := a.upstreams.Select(registry)
	if err != nil {
		return fetch.Target{}, err
	}
	if reg == nil {
		return fetch.Target{Upstream: reference.CanonicalHost(registry), Repo: repo}, nil
	}
	return fetch.Target{Registry: reg, Repo: repo}, nil
}

// servesRegistry reports whether registry (host[:port]) names a namespace this node serves: an
// upstream's name or alias, or the hosted registry. A /v2/<registry>/<repo> path is routed by it
// (registryapi/hostpath). No I/O.
func (a *Agent) servesRegistry(registry string) bool {
	if a.IsHosted(registry) {
		return true
	}
	reg, err := a.upstreams.Select(registry)
	return err == nil && reg != nil
}

// HostedRegistry is the registry name of the hosted namespace, in its canonical spelling.
func (a *Agent) HostedRegistry() string { return a.cfg.HostedRegistry }

// IsHosted reports whether registry names the hosted namespace (in any spelling of it).
func (a *Agent) IsHosted(registry string) bool {
	return registry != "" && reference.CanonicalHost(registry) == a.cfg.HostedRegistry
}

// checkHostedRegistry refuses a hosted registry name that is not a registry host, or that names
// one of the upstreams: pushed repositories would then shadow the upstream's.
func checkHostedRegistry(name string, ups *origin.Set) error {
	if !names.ValidRegistryHost(name) {
		return fmt.Errorf("hosted registry %q: want a registry host[:port] such as %s: %w", name, DefaultHostedRegistry, errdefs.ErrInvalid)
	}
	for _, r := range ups.Registries() {
		if reference.CanonicalHost(r.Name()) == reference.CanonicalHost(name) {
			return fmt.Errorf("hosted registry %q is the upstream %s: pushed repositories would shadow it; choose another name: %w",
				name, r, errdefs.ErrInvalid)
		}
	}
	return nil
}

// Close stops fetches in flight, waits for them and the node's background work, and closes the
// store (unless it was given with WithStore). It is safe to call twice.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed, a.closing = true, true
	a.mu.Unlock()
	a.resolver.Close()
	a.pipeline.Close()
	if a.announcer != nil {
		a.announcer.close()
	}
	if a.node != nil {
		if err := a.node.Close(); err != nil {
			a.log.Warn("closing p2p node", "err", err)
		}
	}
	return a.closeStore()
}

func (a *Agent) closeStore() error {
	err := a.records.Close()
	if !a.ownStore {
		return err
	}
	return errors.Join(err, a.store.Close())
}
