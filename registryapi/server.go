// Package registryapi serves the OCI distribution API (/v2) that container runtimes use as a
// mirror: pulls from a Backend, and pushes into a Pusher (WithPush). It knows nothing of where
// bytes come from, nor of upstream registries: the client's ns parameter reaches the Backend as
// Repository.Registry, and the Backend decides what it names. The upstream client lives beside
// it, in registryapi/origin, and this package does not import it.
package registryapi

import (
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/names"
)

// Server is the /v2 HTTP handler of an agent, and of a seed, which also takes pushes (WithPush).
type Server struct {
	backend Backend
	// pusher, when set, takes uploads, manifest pushes and deletes (WithPush).
	pusher  Pusher
	log     *slog.Logger
	metrics *metrics
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithRegisterer registers the server's metrics; the default registers nowhere.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(s *Server) { s.metrics = newMetrics(r) }
}

// New returns a Server answering from backend.
func New(backend Backend, opts ...Option) *Server {
	s := &Server{backend: backend, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	if s.metrics == nil {
		s.metrics = newMetrics(nil)
	}
	return s
}

// statusWriter records the status and body size for metrics and logs. It forwards ReadFrom so
// a cached blob (an *io.LimitedReader over its file) still goes out through sendfile.
type statusWriter struct {
	http.ResponseWriter
	status  int
	n       int64
	aborted bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.n += n
	return n, err
}

// ServeHTTP routes /v2 requests.
func (s *Server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	rt, rerr := parseRoute(r)
	defer func() {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		code := strconv.Itoa(w.status)
		if w.aborted {
			code = "aborted"
		}
		s.metrics.observeRequest(rt.kind, r.Method, code, time.Since(start))
	}()
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if rerr != nil {
		WriteError(w, r, rerr)
		return
	}
	if rt.kind == epUpload || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		if s.pusher != nil {
			s.servePush(w, r, rt)
			return
		}
		WriteError(w, r, newError(http.StatusMethodNotAllowed, CodeUnsupported, "this mirror serves pulls only: push, upload and delete are not supported"))
		return
	}
	if rt.kind == epBase {
		if ch, ok := s.backend.(Challenger); ok && r.Header.Get("Authorization") == "" {
			if ns := r.URL.Query().Get("ns"); ns == "" || names.ValidRegistryHost(ns) {
				if challenge := ch.BaseChallenge(r.Context(), strings.ToLower(ns)); challenge != "" {
					WriteError(w, r, &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized,
						Message: "authentication required", Challenge: challenge})
					return
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte("{}"))
		}
		return
	}
	ns := r.URL.Query().Get("ns")
	if ns != "" && !names.ValidRegistryHost(ns) {
		// Not a registry host at all: no Backend could serve it. 404 makes containerd and other
		// mirror clients try their next host.
		WriteError(w, r, newError(http.StatusNotFound, CodeNameUnknown, "the requested registry is not an upstream of this mirror"))
		return
	}
	t := Repository{Registry: strings.ToLower(ns), Name: rt.name}
	// The client's credential travels with the request: the Backend proves it at the origin
	// before serving private content, and may forward it to peers. It is never logged.
	r = r.WithContext(credential.NewContext(r.Context(), credential.Access{Registry: t.Registry, Repo: t.Name,
		Credential: credential.FromHeader(r.Header.Get("Authorization"))}))
	switch rt.kind {
	case epManifest:
		s.serveManifest(w, r, t, rt.ref)
	case epBlob:
		s.serveBlob(w, r, t, rt.ref)
	case epTags:
		s.serveTags(w, r, t)
	case epReferrers:
		s.serveReferrers(w, r, t, rt.ref)
	}
}
