package chaos

import (
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"
)

// countingProxy stands between the nodes and the origin, one listener per node, so that it can
// tell who fetched what: the bytes of every blob it passed (ranges included), and the blobs each
// node is fetching at a given moment.
type countingProxy struct {
	URLs []string // the listener of node i is URLs[i]

	mu       sync.Mutex
	bytes    map[string]int64  // digest -> blob bytes sent to nodes
	gets     map[string]int    // digest -> blob GETs
	inFlight []map[string]int  // node -> digest -> GETs under way
	asked    []map[string]bool // node -> digests it asked the origin for since reset
}

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)

// startCountingProxy starts n listeners on 127.0.0.1 passing requests to origin; they stop when
// the test ends.
func startCountingProxy(t *testing.T, origin string, n int) *countingProxy {
	t.Helper()
	target, err := url.Parse(origin)
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{bytes: map[string]int64{}, gets: map[string]int{}}
	for i := range n {
		p.inFlight = append(p.inFlight, map[string]int{})
		p.asked = append(p.asked, map[string]bool{})
		rp := httputil.NewSingleHostReverseProxy(target)
		rp.ErrorLog = nil
		node := i
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				m := blobPath.FindStringSubmatch(r.URL.Path)
				if m == nil || r.Method != http.MethodGet {
					rp.ServeHTTP(w, r)
					return
				}
				d := m[1]
				p.mu.Lock()
				p.gets[d]++
				p.inFlight[node][d]++
				p.asked[node][d] = true
				p.mu.Unlock()
				defer func() {
					p.mu.Lock()
					p.inFlight[node][d]--
					p.mu.Unlock()
				}()
				rp.ServeHTTP(&countingWriter{ResponseWriter: w, p: p, d: d}, r)
			}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Logf("counting proxy: %v", err)
			}
		}()
		t.Cleanup(func() { _ = srv.Close() })
		p.URLs = append(p.URLs, "http://"+l.Addr().String())
	}
	return p
}

// fetching returns the blobs node i is fetching from the origin now.
func (p *countingProxy) fetching(i int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for d, n := range p.inFlight[i] {
		if n > 0 {
			out = append(out, d)
		}
	}
	return out
}

// askedFor returns the blobs node i asked the origin for since the last reset.
func (p *countingProxy) askedFor(i int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for d := range p.asked[i] {
		out = append(out, d)
	}
	return out
}

// reset forgets which node asked for what.
func (p *countingProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.asked {
		p.asked[i] = map[string]bool{}
	}
}

// sent returns the blob bytes and GETs the origin served for d.
func (p *countingProxy) sent(d string) (int64, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytes[d], p.gets[d]
}

type countingWriter struct {
	http.ResponseWriter
	p      *countingProxy
	d      string
	status int
}

func (w *countingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// originRate paces each blob response, like an origin farther away than loopback, so that a
// node can be killed while it fetches.
const originRate = 3 << 20 // bytes a second

func (w *countingWriter) Write(b []byte) (int, error) {
	time.Sleep(time.Duration(len(b)) * time.Second / originRate)
	n, err := w.ResponseWriter.Write(b)
	if w.status == 0 || w.status/100 == 2 {
		w.p.mu.Lock()
		w.p.bytes[w.d] += int64(n)
		w.p.mu.Unlock()
	}
	return n, err
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
