// Package agent wires a Shoal node: the content store, the fetch pipeline (store, then peers,
// then origin) behind the /v2 API, metrics and health endpoints.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/chunks"
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
	// DataDir holds the content store.
	DataDir string
	// Registries are the upstream registry URLs; the first serves requests without ns. None
	// means no origin: content and tags come from the cluster (its seeds) alone.
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
	// ChunkSize is the unit of verified peer transfer (default chunks.DefaultSize).
	ChunkSize int64
	// DebugListen, when set, serves net/http/pprof there (keep it on loopback).
	DebugListen string
	// MaxDownloadRate and MaxUploadRate cap the node's bytes per second received from peers
	// and origins, and sent to peers; zero means unlimited. Local clients are not limited.
	MaxDownloadRate, MaxUploadRate int64
	// AdminToken, when set, is required (as a bearer token) by the admin endpoints (/shoal/v1)
	// and the push API; when empty they are open only while the agent listens on loopback.
	AdminToken string
}

// DefaultTagTTL keeps tag resolutions for a short time, so that a burst of pulls of one tag costs
// the origin one request, while a pushed tag is seen within seconds.
const DefaultTagTTL = 30 * time.Second

// Agent is a running node. It implements registryapi.Backend.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	store     *store.Store
	upstreams *origin.Set
	origin    *origin.Client
	sources   []Source
	// originOnly is the pipeline of a coordinator's fetch for the cluster.
	originOnly []Source
	server     *registryapi.Server // built by the first Handler call, after Extend
	serverOnce sync.Once
	registry   *prometheus.Registry
	metrics    *metrics
	group      singleflight.Group

	download *throttle.Limiter
	// chunkPool recycles chunk-sized buffers of peer transfers.
	chunkPool sync.Pool
	// chunkSlots holds one token per swarm chunk request open, nodeInFlight at most.
	chunkSlots chan struct{}

	// Peer-to-peer parts; all nil when P2P is off.
	node      *p2p.Node
	router    Router
	peers     *transfer.Client
	penalties peerSet

	// lifetime bounds work done for several clients at once (a shared fetch must outlive the
	// request that started it); Close cancels it.
	lifetime context.Context
	stop     context.CancelFunc
	wg       sync.WaitGroup

	gcKick chan struct{} // a commit asks for a GC pass without waiting for the tick

	ext Extension
	// started is when New returned, for the grace given to a node that has not joined yet.
	started time.Time
	// exposed is set when the agent listens beyond loopback: admin endpoints then need a token.
	exposed bool

	mu       sync.Mutex
	inflight map[digest.Digest]*fetch
	closing  bool
	ready    bool
}

var _ registryapi.Backend = (*Agent)(nil)

// New opens the store and builds the agent. Close releases it.
func New(cfg Config) (*Agent, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("agent: a data directory is required")
	}
	if cfg.TagTTL <= 0 {
		cfg.TagTTL = DefaultTagTTL
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = chunks.DefaultSize
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ups := origin.EmptySet() // no origin: a site that runs on its seeds
	if len(cfg.Registries) > 0 {
		var err error
		if ups, err = origin.NewSet(cfg.Registries); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(reg)
	opts := []origin.Option{origin.WithObserver(m), origin.WithUserAgent("shoal")}
	if cfg.DockerConfig != "" {
		opts = append(opts, origin.WithDockerConfig(cfg.DockerConfig))
	}
	oc, err := origin.NewClient(append(opts, cfg.OriginOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	var a *Agent
	st, err := store.Open(cfg.DataDir, store.WithLogger(log), store.WithChunkSize(cfg.ChunkSize),
		store.WithDeleteHook(func(d digest.Digest) {
			if a != nil && a.router != nil {
				a.router.StopProviding(d)
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a = &Agent{
		cfg:        cfg,
		log:        log,
		store:      st,
		upstreams:  ups,
		origin:     oc,
		registry:   reg,
		metrics:    m,
		inflight:   map[digest.Digest]*fetch{},
		chunkSlots: make(chan struct{}, nodeInFlight),
		gcKick:     make(chan struct{}, 1),
		download:   throttle.New(cfg.MaxDownloadRate),
	}
	a.lifetime, a.stop = context.WithCancel(context.Background())
	a.started = time.Now()
	a.sources = []Source{originSource{a: a, c: oc}}
	a.originOnly = a.sources
	if cfg.P2P != nil {
		pc := *cfg.P2P
		pc.DataDir = cfg.DataDir
		pc.Logger = log.With("component", "p2p")
		pc.Registerer = reg
		node, err := p2p.New(pc)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.node, a.router = node, node
		a.peers = transfer.NewClient(node.Host())
		transfer.NewServer(node.Host(), content{a}, log.With("component", "transfer"), m,
			transfer.WithUploadLimit(throttle.New(cfg.MaxUploadRate)))
		a.sources = []Source{peerSource{a}, originSource{a: a, c: oc}}
	}
	m.registerStore(reg, st)
	a.ready = true
	return a, nil
}

// Handler serves /v2 (the pull API), /metrics, /healthz and /readyz.
func (a *Agent) Handler() http.Handler {
	a.serverOnce.Do(func() {
		var b registryapi.Backend = a
		if a.ext.Frontend != nil {
			b = a.ext.Frontend
		}
		opts := append([]registryapi.Option{registryapi.WithLogger(a.log), registryapi.WithRegisterer(a.registry)}, a.ext.FrontendOptions...)
		a.server = registryapi.New(b, a.upstreams, opts...)
	})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{Registry: a.registry}))
	mux.HandleFunc("GET /shoal/v1/status", a.serveStatus)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		ok := a.ready && !a.closing
		a.mu.Unlock()
		if !ok {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	for pattern, h := range a.ext.Routes {
		mux.Handle(pattern, h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// With a token, the version check (/v2/) asks for it too: that is where registry
		// clients (skopeo, podman, docker) learn that a registry takes credentials, and without
		// a challenge there they never send them, so a push fails. A client without credentials
		// goes on anonymously, and pulls stay open to it.
		versionCheck := a.cfg.AdminToken != "" && (r.URL.Path == "/v2" || r.URL.Path == "/v2/")
		if isAdminRequest(r) || versionCheck {
			if ok, why := a.adminAllowed(r); !ok {
				denyAdmin(w, why, a.cfg.AdminToken != "")
				return
			}
		}
		// /v2 goes straight to the registry handler: ServeMux would clean or redirect paths
		// such as /v2/a/../b, and every /v2 answer must be an OCI one.
		if r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/") {
			a.server.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Run serves on cfg.Listen until ctx ends, then shuts down gracefully and closes the agent.
func (a *Agent) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		a.Close()
		return fmt.Errorf("agent: %w", err)
	}
	return a.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	defer a.Close()
	a.exposed = !isLoopback(ln.Addr())
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	a.log.Info("agent serving", "listen", ln.Addr().String(), "data_dir", a.cfg.DataDir, "registries", a.cfg.Registries)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if a.cfg.DebugListen != "" {
		dbg := &http.Server{Addr: a.cfg.DebugListen, Handler: debugHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := dbg.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("debug listener failed", "err", err)
			}
		}()
		defer dbg.Close()
		a.log.Info("pprof serving", "debug_listen", a.cfg.DebugListen)
	}
	if a.node != nil {
		a.wg.Add(2)
		go func() {
			defer a.wg.Done()
			if err := a.node.Run(a.lifetime); err != nil && a.lifetime.Err() == nil {
				a.log.Error("p2p node stopped", "err", err)
			}
		}()
		go func() { defer a.wg.Done(); a.provideAll() }()
		a.log.Info("p2p node started", "peer_id", a.node.ID(), "addrs", a.node.Addrs())
	}
	gcDone := make(chan struct{})
	gcCtx, stopGC := context.WithCancel(ctx)
	defer func() { stopGC(); <-gcDone }()
	go func() { defer close(gcDone); a.runGC(gcCtx) }()
	select {
	case err := <-errc:
		return fmt.Errorf("agent: %w", err)
	case <-ctx.Done():
	}
	a.mu.Lock()
	a.closing = true
	a.mu.Unlock()
	// Fetches in flight stop now (their partial files are kept for the next run), so that the
	// requests streaming them end instead of holding the shutdown; requests served from the
	// store finish.
	a.stop()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	a.log.Info("agent stopped")
	return nil
}

// Close stops fetches in flight, waits for them and closes the store. It is safe to call twice.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.store == nil {
		a.mu.Unlock()
		return nil
	}
	a.closing = true
	a.mu.Unlock()
	a.stop()
	if a.ext.OnClose != nil {
		a.ext.OnClose()
	}
	a.wg.Wait()
	if a.node != nil {
		if err := a.node.Close(); err != nil {
			a.log.Warn("closing p2p node", "err", err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.store.Close()
	a.store = nil
	return err
}

// originSource fetches whole blobs from the request's upstream registry: a large one by parallel
// range requests where the registry supports them (ranges.go), else as one stream.
type originSource struct {
	a *Agent
	c *origin.Client
}

func (originSource) Name() string { return "origin" }

func (s originSource) FetchBlob(ctx context.Context, t registryapi.Target, d digest.Digest, off, size int64) (io.Closer, int64, error) {
	if t.Registry == nil {
		return nil, 0, errNoOrigin
	}
	body, total, err := s.c.GetBlobAt(ctx, t.Registry, t.Repo, d, off, size)
	if err != nil {
		return nil, 0, err
	}
	if rf := s.parallel(ctx, t, d, off, total, body); rf != nil {
		return rf, total, nil
	}
	return body, total, nil
}

// provideAll advertises everything committed, at start. The p2p node spreads the work out.
func (a *Agent) provideAll() {
	n := 0
	_ = a.store.Walk(func(d digest.Digest) bool {
		if a.lifetime.Err() != nil {
			return false
		}
		if err := a.router.Provide(a.lifetime, d); err != nil && a.lifetime.Err() == nil {
			a.log.Debug("providing failed", "digest", d, "err", err)
		}
		n++
		return true
	})
	a.log.Info("advertised stored content", "objects", n)
}

// Node returns the p2p node, or nil when peer-to-peer is off.
func (a *Agent) Node() *p2p.Node { return a.node }

// Gatherer exposes the agent's metrics registry (for the demo and tests).
func (a *Agent) Gatherer() prometheus.Gatherer { return a.registry }

// gcInterval is how often the store's usage is checked against its limit when nothing is
// committed.
const gcInterval = time.Minute

// runGC keeps the store under its limit until ctx ends.
func (a *Agent) runGC(ctx context.Context) {
	if a.cfg.StoreMaxBytes <= 0 {
		return
	}
	high, low := a.cfg.StoreMaxBytes, a.cfg.StoreMaxBytes/10*9
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		freed, err := a.store.GC(ctx, high, low, a.keep)
		if err != nil && ctx.Err() == nil {
			a.log.Error("store GC failed", "err", err)
		}
		if freed > 0 {
			a.metrics.evictedBytes.Add(float64(freed))
			used, _ := a.store.Usage()
			a.log.Info("store GC evicted least recently used content", "bytes", freed, "store_bytes", used)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.gcKick:
		}
	}
}

// kickGC asks for a GC pass soon, without blocking.
func (a *Agent) kickGC() {
	select {
	case a.gcKick <- struct{}{}:
	default:
	}
}

// debugHandler serves the runtime profiles (go tool pprof http://ADDR/debug/pprof/profile).
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
