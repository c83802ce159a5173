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
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// origin is the upstream registry of the benchmark: go-containerregistry's registry, in this
// process, with blobs served from files on disk.
//
// Why not internal/devregistry: it keeps blobs in memory (fine for small ones, but 1 GiB each,
// several of them, would sit in this process's heap) and its counting wrapper hides the
// ResponseWriter's ReadFrom, so it would send bodies 32 KiB at a time instead of with sendfile.
// Why not ggcr's NewDiskBlobHandler: its Stat hashes the whole file on every HEAD and GET, which
// would add ~0.75 s per GiB to the origin's time to first byte. fileBlobs below stats instead.
//
// Why in process rather than a separate process: blobs go out with sendfile, so the origin costs
// little user CPU in this process; the request counts are read directly; and both paths being
// compared (client→origin, client→agent→origin) use the same origin, so whatever it costs is in
// both.
type origin struct {
	srv *http.Server
	ln  net.Listener
	dir string // blob files: dir/sha256/<hex>

	mu   sync.Mutex
	gets map[string]int // blob digest → GET count
}

// startOrigin serves the blobs in dir. With rate > 0 (bytes per second) every response body is
// paced to that rate, as a remote registry behind a link of that speed would send it.
func startOrigin(dir string, rate int64) (*origin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o := &origin{ln: ln, dir: dir, gets: map[string]int{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)),
		registry.WithBlobHandler(fileBlobs{dir: dir}))
	h := o.count(inner)
	if rate > 0 {
		h = paced(h, rate)
	}
	o.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = o.srv.Serve(ln) }()
	return o, nil
}

func (o *origin) URL() string { return "http://" + o.ln.Addr().String() }

func (o *origin) Host() string { return o.ln.Addr().String() }

func (o *origin) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := o.srv.Shutdown(ctx); err != nil {
		_ = o.srv.Close()
	}
}

// BlobGets returns how many GETs the origin answered for blob d, under any repository.
func (o *origin) BlobGets(d string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.gets[d]
}

func (o *origin) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := strings.LastIndex(r.URL.Path, "/blobs/"); i >= 0 && r.Method == http.MethodGet {
			o.mu.Lock()
			o.gets[r.URL.Path[i+len("/blobs/"):]]++
			o.mu.Unlock()
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

// paced limits every response body to rate bytes per second, measured from the first body byte.
// The wrapper hides ReadFrom, so bodies go out in io.Copy's 32 KiB writes rather than sendfile.
func paced(h http.Handler, rate int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&pacedWriter{ResponseWriter: w, rate: rate}, r)
	})
}

type pacedWriter struct {
	http.ResponseWriter
	rate  int64
	start time.Time
	sent  int64
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	if p.start.IsZero() {
		p.start = time.Now()
	}
	var n int
	for len(b) > 0 {
		chunk := b[:min(len(b), 16<<10)]
		// Wait until the bytes already sent are due at the rate.
		due := p.start.Add(time.Duration(float64(p.sent) / float64(p.rate) * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		m, err := p.ResponseWriter.Write(chunk)
		n += m
		p.sent += int64(m)
		if err != nil {
			return n, err
		}
		b = b[len(chunk):]
	}
	return n, nil
}
