// Package devregistry runs a real OCI registry (go-containerregistry's pkg/registry) in process
// on 127.0.0.1, for the demo, tests and benchmarks. It counts what it is asked, can corrupt the
// blobs it serves, and builds images of random content to put into it.
package devregistry

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Registry is an in-process origin registry.
type Registry struct {
	srv *http.Server
	ln  net.Listener

	mu       sync.Mutex
	requests map[string]int // "GET /v2/repo/blobs/sha256:..." → count
	corrupt  map[string]bool
	bytes    atomic.Int64
}

// Start serves a new, empty registry on 127.0.0.1 at a free port (addr "" ) or at addr.
func Start(addr string) (*Registry, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Registry{ln: ln, requests: map[string]int{}, corrupt: map[string]bool{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	r.srv = &http.Server{Handler: r.wrap(inner), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// Host is the registry's host:port.
func (r *Registry) Host() string { return r.ln.Addr().String() }

// URL is the registry's base URL.
func (r *Registry) URL() string { return "http://" + r.Host() }

// Close stops the registry; connections in progress are cut.
func (r *Registry) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		return r.srv.Close()
	}
	return nil
}

// Count returns how many requests with this method and path were answered.
func (r *Registry) Count(method, path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests[method+" "+path]
}

// BlobGets returns how many GETs asked for the blob, under any repository.
func (r *Registry) BlobGets(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, v := range r.requests {
		if strings.HasPrefix(k, "GET /v2/") && strings.HasSuffix(k, "/blobs/"+digest) {
			n += v
		}
	}
	return n
}

// Requests returns a copy of all request counts.
func (r *Registry) Requests() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.requests))
	for k, v := range r.requests {
		out[k] = v
	}
	return out
}

// BytesServed is the total of response body bytes sent.
func (r *Registry) BytesServed() int64 { return r.bytes.Load() }

// ResetCounts forgets the request counts and bytes.
func (r *Registry) ResetCounts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = map[string]int{}
	r.bytes.Store(0)
}

// Corrupt makes the registry flip one byte in the middle of every GET of the blob (on=true), or
// serve it faithfully again (on=false).
func (r *Registry) Corrupt(digest string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.corrupt[digest] = on
}

func (r *Registry) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests[req.Method+" "+req.URL.Path]++
		corrupt := false
		if i := strings.LastIndex(req.URL.Path, "/blobs/"); i >= 0 && req.Method == http.MethodGet {
			corrupt = r.corrupt[req.URL.Path[i+len("/blobs/"):]]
		}
		r.mu.Unlock()
		cw := &countingWriter{ResponseWriter: w, n: &r.bytes}
		if corrupt {
			h.ServeHTTP(&corruptingWriter{countingWriter: cw}, req)
			return
		}
		h.ServeHTTP(cw, req)
	})
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

// corruptingWriter flips the first byte of the body, keeping its length, as a bad disk or a
// tampering proxy would.
type corruptingWriter struct {
	*countingWriter
	done bool
}

func (w *corruptingWriter) Write(p []byte) (int, error) {
	if !w.done && len(p) > 0 {
		q := append([]byte(nil), p...)
		q[0] ^= 0xff
		p, w.done = q, true
	}
	return w.countingWriter.Write(p)
}
