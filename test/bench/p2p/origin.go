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
)

// origin is the upstream registry of the benchmark: go-containerregistry's registry in this
// process, with blobs served from files on disk (sendfile), as in test/bench/mirror. It can be
// blocked: every blob request is then answered 503 and counted, so that a pull through an agent
// can only succeed from its peers.
type origin struct {
	srv *http.Server
	ln  net.Listener
	dir string // blob files: dir/sha256/<hex>

	blocked atomic.Bool

	mu          sync.Mutex
	gets        map[string]int // blob digest → GETs answered
	blockedReqs int            // blob requests refused while blocked
}

func startOrigin(dir string) (*origin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o := &origin{ln: ln, dir: dir, gets: map[string]int{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(fileBlobs{dir: dir}))
	o.srv = &http.Server{Handler: o.wrap(inner), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = o.srv.Serve(ln) }()
	return o, nil
}

func (o *origin) URL() string { return "http://" + o.ln.Addr().String() }

func (o *origin) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := o.srv.Shutdown(ctx); err != nil {
		_ = o.srv.Close()
	}
}

// Block makes every later blob request fail with 503 (and be counted) until Block(false).
func (o *origin) Block(b bool) { o.blocked.Store(b) }

// BlobGets returns how many GETs the origin answered for blob d, under any repository.
func (o *origin) BlobGets(d string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.gets[d]
}

// BlockedRequests returns how many blob requests were refused while blocked.
func (o *origin) BlockedRequests() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.blockedReqs
}

func (o *origin) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := strings.LastIndex(r.URL.Path, "/blobs/"); i >= 0 {
			if o.blocked.Load() {
				o.mu.Lock()
				o.blockedReqs++
				o.mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"blocked by the benchmark"}]}`)
				return
			}
			if r.Method == http.MethodGet {
				o.mu.Lock()
				o.gets[r.URL.Path[i+len("/blobs/"):]]++
				o.mu.Unlock()
			}
		}
		h.ServeHTTP(w, r)
	})
}

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

// Get returns the *os.File itself: ggcr's io.Copy to the ResponseWriter then uses sendfile.
func (b fileBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	f, err := os.Open(b.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, registry.ErrNotFound
	}
	return f, err
}
