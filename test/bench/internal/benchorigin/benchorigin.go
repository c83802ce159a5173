// Package benchorigin is the upstream registry of the benchmark programs: go-containerregistry's
// registry in the benchmark's own process, on 127.0.0.1, serving blob files from disk and
// counting what it serves. It can pace what it sends, refuse blob requests (Block), refuse
// anonymous reads (RequireAuth: a private repository), and be stopped and started again.
//
// Why not internal/devregistry: it keeps blobs in memory (fine for small ones, but 1 GiB each,
// several of them, would sit in this process's heap) and its counting wrapper hides the
// ResponseWriter's ReadFrom, so it would send bodies 32 KiB at a time instead of with sendfile.
// Why not ggcr's NewDiskBlobHandler: its Stat hashes the whole file on every HEAD and GET, which
// would add ~0.75 s per GiB to the origin's time to first byte. fileBlobs below stats instead.
//
// Why in process rather than a separate process: unpaced blobs go out with sendfile, so the
// origin costs little user CPU in this process; the counts are read directly; and both paths a
// benchmark compares (client→origin, client→agent→origin) use the same origin, so whatever it
// costs is in both.
package benchorigin

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"maps"
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

// Pacing is what an origin's responses are paced to, in bytes per second; 0 is unpaced. A paced
// body goes out in plain writes rather than with sendfile.
type Pacing struct {
	// Egress paces the whole origin's egress (every response body, blobs and manifests, to all
	// clients together) with one token bucket: a registry behind an uplink of that speed.
	Egress int64
	// EachResponse paces every response body on its own, from its first byte: a remote
	// registry behind a link of that speed, as one client sees it.
	EachResponse int64
}

// Origin is a running (or stopped) origin.
type Origin struct {
	handler http.Handler
	dir     string
	pace    Pacing
	lim     *rate.Limiter // Egress; nil: none

	srvMu sync.Mutex
	srv   *http.Server // nil while stopped
	host  string       // the listener's host:port (kept while stopped: what the agents were given)
	addr  string       // what Start listens on

	blocked  atomic.Bool
	getsOnly atomic.Bool                       // while blocked, blob HEADs are still answered
	users    atomic.Pointer[map[string]string] // RequireAuth's; nil: anyone may read

	bytes     atomic.Int64 // response body bytes sent, everything
	blobBytes atomic.Int64 // of which blob GET bodies

	mu          sync.Mutex
	blobGets    map[string]int // blob digest → GETs answered, under any repository
	rangeGets   int            // blob GETs with a Range header (resumes)
	manifestN   int            // manifest GETs and HEADs
	blockedReqs int            // blob requests refused while blocked
	req         Requests
}

// egressChunk is the most one write waits for at a time under Egress pacing: small enough that
// the shared bucket interleaves the many concurrent responses finely.
const egressChunk = 64 << 10

// Start serves the blob files dir/<algorithm>/<hex> (as benchblob writes them), paced as p says,
// on a free port of 127.0.0.1. Manifests pushed to it are kept in memory, for its whole life.
func Start(dir string, p Pacing) (*Origin, error) { return StartAt(dir, p, "127.0.0.1:0") }

// StartAt is Start listening on addr (host:port), for an origin in a network namespace of its
// own (see RunChild).
func StartAt(dir string, p Pacing, addr string) (*Origin, error) {
	o := &Origin{dir: dir, pace: p, blobGets: map[string]int{}, addr: addr}
	if p.Egress > 0 {
		o.lim = rate.NewLimiter(rate.Limit(p.Egress), 4*egressChunk)
	}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(fileBlobs{dir: dir}))
	o.handler = o.wrap(inner)
	if err := o.Start(); err != nil {
		return nil, err
	}
	return o, nil
}

// URL is the origin's base URL, http://127.0.0.1:PORT; while stopped, the one it had.
func (o *Origin) URL() string { return "http://" + o.Host() }

// Host is the origin's host:port; while stopped, the one it had.
func (o *Origin) Host() string {
	o.srvMu.Lock()
	defer o.srvMu.Unlock()
	return o.host
}

// Start serves again, on a new port of 127.0.0.1 (StartAt's address), with the same content and
// counts (no-op if serving).
func (o *Origin) Start() error {
	o.srvMu.Lock()
	defer o.srvMu.Unlock()
	if o.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	o.srv = &http.Server{Handler: o.handler, ReadHeaderTimeout: 10 * time.Second}
	o.host = ln.Addr().String()
	go func(srv *http.Server) { _ = srv.Serve(ln) }(o.srv)
	return nil
}

// Close stops the origin: the listener closes at once (new connections are refused, as by a
// registry that is down), and open connections are closed when idle, or after a second.
func (o *Origin) Close() {
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

// Block makes every later blob request fail with 503 (and be counted) until Block(false), so
// that a pull through an agent can only succeed from its peers.
func (o *Origin) Block(b bool) { o.getsOnly.Store(false); o.blocked.Store(b) }

// BlockGets is Block for blob GETs only: HEADs still answer with the blob's size, which an
// agent binds before it accepts a peer's bytes (an origin that is up but must not be pulled from).
func (o *Origin) BlockGets(b bool) { o.getsOnly.Store(b); o.blocked.Store(b) }

// BlockedRequests is how many blob requests were refused while blocked.
func (o *Origin) BlockedRequests() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.blockedReqs
}

// BlobGets is how many GETs the origin answered for blob d, under any repository.
func (o *Origin) BlobGets(d string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.blobGets[d]
}

// Counts is a snapshot of what an origin served.
type Counts struct {
	Bytes, BlobBytes     int64          // response body bytes; of which blob GETs'
	BlobGets             map[string]int // blob digest → GETs
	RangeGets, Manifests int            // blob GETs with a Range header; manifest GETs and HEADs
	Requests             Requests       // every request, by kind
}

// Requests counts an origin's requests by kind. A request refused for its credentials counts
// only as Unauthorized; one refused while blocked only in BlockedRequests.
type Requests struct {
	BlobGets, BlobHeads         int
	ManifestGets, ManifestHeads int
	Other                       int // tag lists, the /v2/ ping, pushes
	Unauthorized                int // answered 401 (RequireAuth)
}

func (q Requests) since(b Requests) Requests {
	return q.Add(Requests{BlobGets: -b.BlobGets, BlobHeads: -b.BlobHeads, ManifestGets: -b.ManifestGets,
		ManifestHeads: -b.ManifestHeads, Other: -b.Other, Unauthorized: -b.Unauthorized})
}

// Add is q plus b, kind by kind.
func (q Requests) Add(b Requests) Requests {
	return Requests{BlobGets: q.BlobGets + b.BlobGets, BlobHeads: q.BlobHeads + b.BlobHeads,
		ManifestGets: q.ManifestGets + b.ManifestGets, ManifestHeads: q.ManifestHeads + b.ManifestHeads,
		Other: q.Other + b.Other, Unauthorized: q.Unauthorized + b.Unauthorized}
}

// Total is every request counted.
func (q Requests) Total() int {
	return q.BlobGets + q.BlobHeads + q.ManifestGets + q.ManifestHeads + q.Other + q.Unauthorized
}

// Counts is what the origin has served so far.
func (o *Origin) Counts() Counts {
	o.mu.Lock()
	defer o.mu.Unlock()
	return Counts{Bytes: o.bytes.Load(), BlobBytes: o.blobBytes.Load(), BlobGets: maps.Clone(o.blobGets),
		RangeGets: o.rangeGets, Manifests: o.manifestN, Requests: o.req}
}

// Since is c minus an earlier snapshot b.
func (c Counts) Since(b Counts) Counts {
	out := Counts{Bytes: c.Bytes - b.Bytes, BlobBytes: c.BlobBytes - b.BlobBytes, BlobGets: map[string]int{},
		RangeGets: c.RangeGets - b.RangeGets, Manifests: c.Manifests - b.Manifests,
		Requests: c.Requests.since(b.Requests)}
	for k, v := range c.BlobGets {
		if d := v - b.BlobGets[k]; d != 0 {
			out.BlobGets[k] = d
		}
	}
	return out
}

func (o *Origin) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !o.authorized(r) {
			o.mu.Lock()
			o.req.Unauthorized++
			o.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("WWW-Authenticate", `Basic realm="benchorigin"`)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		blob := false
		if i := strings.LastIndex(r.URL.Path, "/blobs/"); i >= 0 {
			if o.blocked.Load() && (r.Method != http.MethodHead || !o.getsOnly.Load()) {
				o.mu.Lock()
				o.blockedReqs++
				o.mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"blocked by the benchmark"}]}`)
				return
			}
			o.mu.Lock()
			switch r.Method {
			case http.MethodGet:
				blob = true
				o.req.BlobGets++
				o.blobGets[r.URL.Path[i+len("/blobs/"):]]++
				if r.Header.Get("Range") != "" {
					o.rangeGets++
				}
			case http.MethodHead:
				o.req.BlobHeads++
			default:
				o.req.Other++
			}
			o.mu.Unlock()
		} else if strings.Contains(r.URL.Path, "/manifests/") {
			o.mu.Lock()
			o.manifestN++
			switch r.Method {
			case http.MethodGet:
				o.req.ManifestGets++
			case http.MethodHead:
				o.req.ManifestHeads++
			default:
				o.req.Other++
			}
			o.mu.Unlock()
		} else {
			o.mu.Lock()
			o.req.Other++
			o.mu.Unlock()
		}
		cw := countingWriter{ResponseWriter: w, o: o, blob: blob}
		switch {
		case o.lim != nil:
			h.ServeHTTP(&egressWriter{countingWriter: cw, ctx: r.Context()}, r)
		case o.pace.EachResponse > 0:
			h.ServeHTTP(&responseWriter{countingWriter: cw, rate: o.pace.EachResponse}, r)
		default:
			h.ServeHTTP(&sendfileWriter{cw}, r)
		}
	})
}

// RequireAuth makes the origin answer every request without one of users' credentials (HTTP
// Basic, user → password) with 401 and a Basic challenge, as a registry whose repositories are
// private; nil lets anyone read again. Set it before the clients start: it does not wait for
// requests in flight.
func (o *Origin) RequireAuth(users map[string]string) {
	if users == nil {
		o.users.Store(nil)
		return
	}
	u := maps.Clone(users)
	o.users.Store(&u)
}

func (o *Origin) authorized(r *http.Request) bool {
	users := o.users.Load()
	if users == nil {
		return true
	}
	u, p, ok := r.BasicAuth()
	want, known := (*users)[u]
	return ok && known && subtle.ConstantTimeCompare([]byte(p), []byte(want)) == 1
}

// BasicAuth is the Authorization header value of user's credential.
func BasicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// countingWriter counts the response body bytes that go through its Write.
type countingWriter struct {
	http.ResponseWriter
	o    *Origin
	blob bool
}

func (w *countingWriter) count(n int64) {
	w.o.bytes.Add(n)
	if w.blob {
		w.o.blobBytes.Add(n)
	}
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.count(int64(n))
	return n, err
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sendfileWriter counts, and keeps the ResponseWriter's ReadFrom, through which io.Copy of a
// blob file sends it with sendfile.
type sendfileWriter struct{ countingWriter }

func (w *sendfileWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := w.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
	w.count(n)
	return n, err
}

// egressWriter paces a response body through the origin's shared bucket. It has no ReadFrom, so
// io.Copy hands it 32 KiB buffers instead of using sendfile.
type egressWriter struct {
	countingWriter
	ctx context.Context
}

func (w *egressWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), egressChunk)
		if err := w.o.lim.WaitN(w.ctx, k); err != nil {
			return written, err
		}
		n, err := w.countingWriter.Write(p[:k])
		written += n
		if err != nil {
			return written, err
		}
		p = p[k:]
	}
	return written, nil
}

// responseWriter paces one response body to rate bytes per second, measured from its first
// byte. It has no ReadFrom, so bodies go out in io.Copy's 32 KiB writes rather than sendfile.
type responseWriter struct {
	countingWriter
	rate  int64
	start time.Time
	sent  int64
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.start.IsZero() {
		w.start = time.Now()
	}
	var n int
	for len(b) > 0 {
		chunk := b[:min(len(b), 16<<10)]
		// Wait until the bytes already sent are due at the rate.
		due := w.start.Add(time.Duration(float64(w.sent) / float64(w.rate) * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		m, err := w.countingWriter.Write(chunk)
		n += m
		w.sent += int64(m)
		if err != nil {
			return n, err
		}
		b = b[len(chunk):]
	}
	return n, nil
}

// fileBlobs is a read-only ggcr BlobHandler over dir/<algorithm>/<hex>. The files are written by
// the benchmark with their digest computed as they were written, so Stat need not hash them.
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

// Get returns the *os.File itself: ggcr's io.Copy to the ResponseWriter then uses sendfile,
// unless the origin paces.
func (b fileBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	f, err := os.Open(b.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, registry.ErrNotFound
	}
	return f, err
}
