// Package registryapi serves the OCI distribution pull API (/v2) that container runtimes use as
// a mirror, and (in origin/) talks to the upstream registries. It knows nothing of where bytes
// come from: a Backend supplies blobs and manifests.
package registryapi

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// Server is the /v2 HTTP handler of an agent, and of a seed, which also takes pushes (WithPush).
type Server struct {
	backend   Backend
	upstreams *origin.Set
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

// New returns a Server answering from backend for the configured upstreams.
func New(backend Backend, upstreams *origin.Set, opts ...Option) *Server {
	s := &Server{backend: backend, upstreams: upstreams, log: slog.New(slog.DiscardHandler)}
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
		writeError(w, r, rerr)
		return
	}
	if rt.kind == epUpload || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		if s.pusher != nil {
			s.servePush(w, r, rt)
			return
		}
		writeError(w, r, newError(http.StatusMethodNotAllowed, CodeUnsupported, "this mirror serves pulls only: push, upload and delete are not supported"))
		return
	}
	if rt.kind == epBase {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte("{}"))
		}
		return
	}
	reg, err := s.upstreams.Select(r.URL.Query().Get("ns"))
	if err != nil && s.pusher != nil && errors.Is(err, errdefs.ErrNotConfigured) {
		// Pushed repositories are named by path alone: an ns naming no upstream still reaches
		// the Backend, with no Registry, and it decides.
		reg, err = nil, nil
	}
	if err != nil {
		writeError(w, r, toError(err, CodeNameUnknown))
		return
	}
	t := Target{Registry: reg, Repo: rt.name}
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
