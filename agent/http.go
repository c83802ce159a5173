package agent

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/internal/httpbound"
	"github.com/shoal-oci/shoal/internal/httpguard"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/registryapi/hostpath"
)

// Handler is a plain agent's HTTP surface: its own /v2 (the pull API), /metrics, /healthz,
// /readyz, /shoal/v1/status, and the admin endpoints for preheat and local pins.
// It may be called more than once; the /v2 server (and its metrics) is built once.
func (a *Agent) Handler() http.Handler {
	a.v2Once.Do(func() {
		a.v2 = registryapi.New(a, registryapi.WithLogger(a.log), registryapi.WithRegisterer(a.registry))
	})
	return a.Surface(a.v2, pins.NewAdmin(a.Pins(1, nil), false).Routes())
}

// Pins returns pins over this node's parts: replicas is the count of a pin that names none,
// seeds the other seeds (nil on a node that is not a seed).
func (a *Agent) Pins(replicas int, seeds pins.Seeds) *pins.Pins {
	return pins.New(pins.Deps{Store: a.store, Manifests: a.resolver, Blobs: a.pipeline, Targets: a,
		Log: a.log.With("component", "pins"), Replicas: replicas, Seeds: seeds})
}

// Surface is the node's HTTP surface around a /v2 handler: /v2 requests go to v2 untouched
// (every /v2 answer must be an OCI one, so ServeMux never cleans or redirects their paths), the
// rest to the node's own endpoints and the admin routes, by ServeMux pattern. Admin routes and
// /v2 requests that change content pass the admin check first. A seed serves its own /v2 (with
// push) through it.
//
// Pulls may name their registry as the first component of the path (/v2/ghcr.io/org/app/...), for
// clients that send no ns (registryapi/hostpath).
func (a *Agent) Surface(v2 http.Handler, admin map[string]http.Handler) http.Handler {
	v2 = hostpath.Route(v2, a.servesRegistry)
	// Pulls get their first byte, or a 503 that sends the runtime to its next host, within the
	// bound, whatever peers and origins do. Pushes read a body first, as long as a blob.
	pull := httpbound.FirstByte(v2, a.cfg.FirstByteTimeout, a.answerLate)
	mux := a.probes()
	mux.HandleFunc("GET /shoal/v1/status", a.serveStatus)
	for pattern, h := range admin {
		mux.Handle(pattern, h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// No answer of the node is a page: a browser must never sniff a blob or a manifest
		// into one.
		w.Header().Set("X-Content-Type-Options", "nosniff")
		// With a token, the version check (/v2/) asks for it too: that is where registry
		// clients (skopeo, podman, docker) learn that a registry takes credentials, and without
		// a challenge there they never send them, so a push fails. A client without credentials
		// goes on anonymously, and pulls stay open to it.
		versionCheck := a.cfg.AdminToken != "" && (r.URL.Path == "/v2" || r.URL.Path == "/v2/")
		admin := isAdminRequest(r)
		if admin {
			if e := a.refuseBrowser(r); e != nil {
				registryapi.WriteError(w, r, e)
				return
			}
		}
		if admin || versionCheck {
			if ok, why := a.adminAllowed(r); !ok {
				denyAdmin(w, r, why, a.cfg.AdminToken != "")
				return
			}
		}
		if r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/") {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				pull.ServeHTTP(w, r)
				return
			}
			v2.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// answerLate is the answer to a pull that has none within Config.FirstByteTimeout.
func (a *Agent) answerLate(w http.ResponseWriter, r *http.Request) {
	a.metrics.firstByteTimeouts.Inc()
	a.log.Warn("no answer within the first-byte bound; answered 503 so the client tries its next host",
		"method", r.Method, "path", r.URL.Path, "bound", a.cfg.FirstByteTimeout)
	registryapi.WriteError(w, r, &registryapi.Error{Status: http.StatusServiceUnavailable, Code: registryapi.CodeUnavailable,
		Message: "no answer within this mirror's first-byte bound; try the next host"})
}

// Connection caps of the listeners besides Listen (Config.MaxConnections): Prometheus and the
// kubelet's probes, and pprof.
const (
	maxMetricsConnections = 64
	maxDebugConnections   = 8
)

// refusal is the answer to a connection past a listener's cap.
var refusal = func() []byte {
	body, _ := json.Marshal(map[string][]*registryapi.Error{"errors": {{Code: registryapi.CodeUnavailable,
		Message: "too many connections to this node; try the next host"}}})
	return httpbound.Refusal(http.StatusServiceUnavailable, "application/json", body)
}()

// probes serves /metrics, /healthz and /readyz: on the main listener, and alone on
// cfg.MetricsListen.
//
// /readyz answers 200 once the store is open (New) and the HTTP server accepts requests, until
// shutdown begins. It does not wait for peers: a node with no peer, or whose bootstrap peers do
// not answer, serves from its store and its origins, so a one-node cluster is ready, and a
// DaemonSet's pods do not hold each other back at a rollout.
func (a *Agent) probes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{Registry: a.registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		ok := a.serving && !a.closing
		a.mu.Unlock()
		if !ok {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// Run serves Handler on cfg.Listen until ctx ends, then shuts down gracefully and closes the
// agent.
func (a *Agent) Run(ctx context.Context) error {
	ln, err := a.Listen()
	if err != nil {
		return err
	}
	return a.Serve(ctx, ln)
}

// Listen opens cfg.Listen; on failure the agent is closed.
func (a *Agent) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		if cerr := a.Close(); cerr != nil {
			a.log.Warn("closing the agent", "err", cerr)
		}
		return nil, fmt.Errorf("agent: %w", err)
	}
	return ln, nil
}

// Serve is Run on a listener the caller opened.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	return a.ServeHandler(ctx, ln, a.Handler())
}

// ServeHandler serves h (a role's surface, built with Surface) on ln, runs the node's background
// work (the p2p node, advertising, garbage collection) until ctx ends, then shuts down
// gracefully and closes the agent.
func (a *Agent) ServeHandler(ctx context.Context, ln net.Listener, h http.Handler) error {
	defer a.Close()
	a.exposed = !isLoopback(ln.Addr())
	ln = httpbound.Listener(ln, a.cfg.MaxConnections, refusal)
	srv := httpbound.Server(h, a.cfg.WriteStallTimeout, a.log)
	var metrics *http.Server
	if a.cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", a.cfg.MetricsListen)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("agent: metrics listener: %w", err)
		}
		mln = httpbound.Listener(mln, maxMetricsConnections, refusal)
		metrics = httpbound.Server(nosniff(a.probes()), a.cfg.WriteStallTimeout, a.log)
		go func() {
			if err := metrics.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("metrics listener failed", "err", err)
			}
		}()
		defer metrics.Close()
		a.log.Info("metrics serving", "metrics_listen", mln.Addr().String())
	}
	a.log.Info("agent serving", "listen", ln.Addr().String(), "data_dir", a.cfg.DataDir, "registries", a.cfg.Registries,
		"hosted_registry", a.cfg.HostedRegistry)
	errc := make(chan error, 1)
	if a.cfg.TLSCertFile != "" {
		go func() { errc <- srv.ServeTLS(ln, a.cfg.TLSCertFile, a.cfg.TLSKeyFile) }()
	} else {
		if a.exposed && a.cfg.AdminToken != "" {
			a.log.Warn("the admin token and pushed content cross the network in clear: give --tls-cert and --tls-key", "listen", ln.Addr().String())
		}
		go func() { errc <- srv.Serve(ln) }()
	}
	a.mu.Lock()
	a.serving = true // ln accepts connections already; Serve answers them
	a.mu.Unlock()
	if a.cfg.DebugListen != "" {
		// A CPU profile writes nothing for its whole duration: the stall bound counts only
		// writes that block, so it does not cut one short.
		dbg := httpbound.Server(nosniff(debugHandler()), a.cfg.WriteStallTimeout, a.log)
		go func() {
			dln, err := net.Listen("tcp", a.cfg.DebugListen)
			if err == nil {
				err = dbg.Serve(httpbound.Listener(dln, maxDebugConnections, refusal))
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("debug listener failed", "err", err)
			}
		}()
		defer dbg.Close()
		a.log.Info("pprof serving", "debug_listen", a.cfg.DebugListen)
	}
	bg, stopBG := context.WithCancel(ctx)
	var bgDone sync.WaitGroup
	defer func() { stopBG(); bgDone.Wait() }()
	if a.node != nil {
		bgDone.Add(2)
		go func() {
			defer bgDone.Done()
			if err := a.node.Run(bg); err != nil && bg.Err() == nil {
				a.log.Error("p2p node stopped", "err", err)
			}
		}()
		go func() { defer bgDone.Done(); a.announcer.announceStored(a.store) }()
		a.log.Info("p2p node started", "peer_id", a.node.ID(), "addrs", a.node.Addrs())
	}
	bgDone.Add(1)
	go func() { defer bgDone.Done(); a.gc.Run(bg) }()
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
	a.resolver.Close()
	a.pipeline.Close()
	if a.announcer != nil {
		a.announcer.close()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close() // the graceful shutdown ran out of time: cut what is left
	}
	a.log.Info("agent stopped")
	return nil
}

// nosniff marks every answer of h as no page for a browser to sniff.
func nosniff(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
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

// adminAllowed reports whether r may use the admin endpoints and the push API: with a token
// configured, it must carry it (as a bearer token, or as the password of basic auth, which is
// what `crane auth login` and skopeo's --creds send); with none, only when the agent listens on
// loopback alone.
func (a *Agent) adminAllowed(r *http.Request) (ok bool, why string) {
	token := a.cfg.AdminToken
	if token == "" {
		if a.exposed {
			return false, "admin endpoints and push are off: this node listens beyond loopback without --admin-token-file"
		}
		return true, ""
	}
	var got string
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = strings.TrimSpace(v)
	} else if _, pw, ok := r.BasicAuth(); ok {
		got = pw
	}
	if got == "" {
		return false, "authentication required: a bearer token from --admin-token-file"
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return false, "the admin token is not valid"
	}
	return true, ""
}

// refuseBrowser keeps web pages away from the admin endpoints and the push API, whatever the
// token: a Host not on the allowlist (DNS rebinding), a request a browser marks as a page's
// (Origin, Sec-Fetch-Site), and a POST with a content type a page can send to another origin
// without a preflight (an HTML form's). docs/operations.md has the rules and what clients send.
func (a *Agent) refuseBrowser(r *http.Request) *registryapi.Error {
	if !a.hosts.Allowed(r.Host) {
		return &registryapi.Error{Status: http.StatusForbidden, Code: registryapi.CodeDenied,
			Message: "the Host header names no address or allowed name of this node: add the name with --allowed-host"}
	}
	if page, why := httpguard.FromPage(r); page {
		return &registryapi.Error{Status: http.StatusForbidden, Code: registryapi.CodeDenied,
			Message: "requests from web pages are refused (" + why + ")"}
	}
	if r.Method == http.MethodPost && httpguard.SimpleContentType(r) {
		return &registryapi.Error{Status: http.StatusUnsupportedMediaType, Code: registryapi.CodeUnsupported,
			Message: "a form's content type is refused here: send application/json, application/octet-stream or none"}
	}
	return nil
}

// isAdminRequest reports requests that need the admin token: the /shoal/v1 endpoints and /v2
// requests that change content. Pulls stay open to the local runtimes.
func isAdminRequest(r *http.Request) bool {
	if strings.HasPrefix(r.URL.Path, "/shoal/v1/") {
		// The status page is read-only, like /metrics.
		return !(r.URL.Path == "/shoal/v1/status" && (r.Method == http.MethodGet || r.Method == http.MethodHead))
	}
	if r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/") {
		return r.Method != http.MethodGet && r.Method != http.MethodHead ||
			strings.Contains(r.URL.Path, "/blobs/uploads")
	}
	return false
}

// denyAdmin answers an unauthorised admin or push request with an OCI error body: 401 with a
// challenge when a token would do (so registry clients send their credentials), else 403.
func denyAdmin(w http.ResponseWriter, r *http.Request, why string, token bool) {
	e := &registryapi.Error{Status: http.StatusForbidden, Code: registryapi.CodeDenied, Message: why}
	if token {
		e.Status, e.Code = http.StatusUnauthorized, registryapi.CodeUnauthorized
		w.Header().Set("WWW-Authenticate", `Basic realm="shoal"`)
	}
	registryapi.WriteError(w, r, e)
}

// isLoopback reports whether a listener accepts only loopback connections.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// IsLoopbackAddress reports whether a host:port listen address binds loopback only.
func IsLoopbackAddress(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Status is the JSON document served at /shoal/v1/status.
type Status struct {
	PeerID           string     `json:"peerID,omitempty"`
	ListenAddrs      []string   `json:"listenAddrs,omitempty"`
	ConnectedPeers   []string   `json:"connectedPeers"`
	RoutingTableSize int        `json:"routingTableSize"`
	Registries       []string   `json:"registries"`
	HostedRegistry   string     `json:"hostedRegistry"`
	Store            StoreUsage `json:"store"`
	Transfers        []Transfer `json:"transfers"`
}

// StoreUsage is what the store holds: Bytes, what counts toward --max-store-size, is the
// committed content and the content being written (Pending: fetches' reservations, pushes,
// partial files kept for a resume); Objects counts committed content.
type StoreUsage struct {
	Bytes   int64 `json:"bytes"`
	Pending int64 `json:"pending"`
	Objects int64 `json:"objects"`
}
