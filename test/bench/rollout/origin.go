package main

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/time/rate"
)

// origin is the upstream registry of the benchmark: go-containerregistry's registry in this
// process, blobs served from files on disk, and the whole origin's egress (every response body:
// blobs and manifests, to all clients together) paced by one token bucket to its bandwidth.
//
// The origin can be stopped (its listener closed, so that every request fails at once with
// "connection refused", as for a registry that is down) and started again on a new port with
// the same content and counters.
type origin struct {
	handler http.Handler
	dir     string
	lim     *rate.Limiter // nil: unlimited

	srvMu sync.Mutex
	srv   *http.Server // nil while stopped
	url   string       // the listener's URL (kept while stopped: what the agents were given)

	bytes     atomic.Int64 // response body bytes sent, everything
	blobBytes atomic.Int64 // of which blob GET bodies

	mu        sync.Mutex
	blobGets  map[string]int // blob digest → GETs
	rangeGets int            // blob GETs with a Range header (resumes)
	manifestN int            // manifest GETs and HEADs
}

// originChunk is the most one write waits for at a time: small enough that the shared bucket
// interleaves the many concurrent responses finely.
const originChunk = 64 << 10

func startOrigin(dir string, bytesPerSec int64) (*origin, error) {
	o := &origin{dir: dir, blobGets: map[string]int{}}
	if bytesPerSec > 0 {
		o.lim = rate.NewLimiter(rate.Limit(bytesPerSec), 4*originChunk)
	}
	// One registry handler for the origin's whole life: its manifests are in memory, and must
	// survive a stop and a start.
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(fileBlobs{dir: dir}))
	o.handler = o.wrap(inner)
	if err := o.Start(); err != nil {
		return nil, err
	}
	return o, nil
}

// URL is the origin's address; while stopped, the address it had.
func (o *origin) URL() string {
	o.srvMu.Lock()
	defer o.srvMu.Unlock()
	return o.url
}

// Start serves on a new port of 127.0.0.1 (no-op if serving).
func (o *origin) Start() error {
	o.srvMu.Lock()
	defer o.srvMu.Unlock()
	if o.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	o.srv = &http.Server{Handler: o.handler, ReadHeaderTimeout: 10 * time.Second}
	o.url = "http://" + ln.Addr().String()
	go func(srv *http.Server) { _ = srv.Serve(ln) }(o.srv)
	return nil
}

// Close stops the origin: the listener closes at once (new connections are refused), and open
// connections are closed when idle, or after a second.
func (o *origin) Close() {
	o.srvMu.Lock()
	defer o.srvMu.Unlock()
	if o.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := o.srv.Shutdown(ctx); err != nil {
		_ = o.srv.Close()
	}
	o.srv = nil
}

// originCounts is a snapshot of what the origin served.
type originCounts struct {
	bytes, blobBytes     int64
	blobGets             map[string]int
	rangeGets, manifestN int
}

func (o *origin) counts() originCounts {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := originCounts{bytes: o.bytes.Load(), blobBytes: o.blobBytes.Load(), blobGets: map[string]int{},
		rangeGets: o.rangeGets, manifestN: o.manifestN}
	for k, v := range o.blobGets {
		c.blobGets[k] = v
	}
	return c
}

// since is c minus an earlier snapshot.
func (c originCounts) since(b originCounts) originCounts {
	out := originCounts{bytes: c.bytes - b.bytes, blobBytes: c.blobBytes - b.blobBytes, blobGets: map[string]int{},
		rangeGets: c.rangeGets - b.rangeGets, manifestN: c.manifestN - b.manifestN}
	for k, v := range c.blobGets {
		if d := v - b.blobGets[k]; d != 0 {
			out.blobGets[k] = d
		}
	}
	return out
}

func (o *origin) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		blob := false
		if i := strings.LastIndex(r.URL.Path, "/blobs/"); i >= 0 && r.Method == http.MethodGet {
			blob = true
			o.mu.Lock()
			o.blobGets[r.URL.Path[i+len("/blobs/"):]]++
			if r.Header.Get("Range") != "" {
				o.rangeGets++
			}
			o.mu.Unlock()
		} else if strings.Contains(r.URL.Path, "/manifests/") {
			o.mu.Lock()
			o.manifestN++
			o.mu.Unlock()
		}
		h.ServeHTTP(&pacedWriter{ResponseWriter: w, o: o, ctx: r.Context(), blob: blob}, r)
	})
}

// pacedWriter paces a response body through the origin's shared bucket and counts it. It has no
// ReadFrom, so io.Copy hands it 32 KiB buffers instead of using sendfile.
type pacedWriter struct {
	http.ResponseWriter
	o    *origin
	ctx  context.Context
	blob bool
}

func (w *pacedWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), originChunk)
		if w.o.lim != nil {
			if err := w.o.lim.WaitN(w.ctx, k); err != nil {
				return written, err
			}
		}
		n, err := w.ResponseWriter.Write(p[:k])
		written += n
		w.o.bytes.Add(int64(n))
		if w.blob {
			w.o.blobBytes.Add(int64(n))
		}
		if err != nil {
			return written, err
		}
		p = p[k:]
	}
	return written, nil
}

func (w *pacedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// fileBlobs is a read-only ggcr BlobHandler over dir/<algorithm>/<hex>. The files are written by
// this program with their digest computed as they were written, so Stat need not hash them.
type fileBlobs struct{ dir string }

func (b fileBlobs) path(h v1.Hash) string { return filepath.Join(b.dir, h.Algorithm, h.Hex) }

func (b fileBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	fi, err := os.Stat(b.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return 0, registry.ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (b fileBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	f, err := os.Open(b.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, registry.ErrNotFound
	}
	return f, err
}
