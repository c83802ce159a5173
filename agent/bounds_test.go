package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// startHungOrigin is an origin that accepts connections and never answers: what makes a runtime
// hang on a mirror, and must not make the node hang its clients.
func startHungOrigin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// startSilentPeer is a cluster member that takes every content request and never answers it.
func startSilentPeer(t *testing.T, bootstrap ...string) *p2p.Node {
	t.Helper()
	n, err := p2p.New(p2p.Config{DataDir: t.TempDir(), ListenAddrs: []string{loopback}, Bootstrap: bootstrap})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	n.Host().SetStreamHandler(transfer.ProtocolID, func(s network.Stream) {
		_, _ = io.Copy(io.Discard, io.LimitReader(s, 16<<10)) // the request, then silence
		<-stop
		_ = s.Reset()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { close(stop); cancel(); <-done; n.Close() })
	waitFor(t, func() bool { return n.RoutingTableSize() > 0 }, "the silent peer to join")
	return n
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// ociCode is the first error code of an OCI error body.
func ociCode(body []byte) string {
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// TestStallsAreBounded: an origin that accepts and never answers, a peer that never answers and
// a client that reads a byte a second. Every stalled pull ends with 503 UNAVAILABLE (which sends
// a runtime to its next host) at the first-byte bound; the slow reader's connection is cut; the
// node answers everything else meanwhile (content whose provider is the silent peer too); and
// goroutines and descriptors come back to where they were.
func TestStallsAreBounded(t *testing.T) {
	hung := startHungOrigin(t)
	o := startOrigin(t)
	data, d := randomBlob(t, 24<<20)
	pushBlob(t, o, "test/big", data, d)
	small, sd := randomBlob(t, 3<<20)
	pushBlob(t, o, "test/small", small, sd)

	a := startAgentConfig(t, agent.Config{
		DataDir:    t.TempDir(),
		Registries: []string{hung, o.URL()},
		P2P:        &p2p.Config{ListenAddrs: []string{loopback}},
		ChunkSize:  1 << 20,
		PieceSize:  1 << 20,
		// The default first-byte bound (30 s) leaves room for a pull around the silent peer (a
		// chunk request, 10 s, then a map request, 5 s) to the origin; a short write stall bound
		// keeps the slow reader's part short. What is asserted is how requests end.
		WriteStallTimeout: time.Second,
	})
	silent := startSilentPeer(t, a.Node().Addrs()...)
	if err := silent.Provide(context.Background(), sd); err != nil {
		t.Fatal(err)
	}
	waitProvided(t, a, sd.String())
	ns := "?ns=" + o.Host()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
	do := func(method, path string) (int, []byte, error) {
		req, _ := http.NewRequest(method, "http://"+a.host+path, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, body, err
	}
	// The big blob is cached first, for the slow reader.
	if code, body, err := do(http.MethodGet, "/v2/test/big/blobs/"+d.String()+ns); err != nil || code != 200 || !bytes.Equal(body, data) {
		t.Fatalf("caching the big blob: %d, %v", code, err)
	}
	runtime.GC()
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)

	// The stalled pulls: tags, manifests and blobs of the origin that never answers, 20 of each
	// at once.
	stalled := []struct{ method, path string }{
		{http.MethodGet, "/v2/library/app/manifests/v1"},
		{http.MethodHead, "/v2/library/app/manifests/v1"},
		{http.MethodGet, "/v2/library/app/manifests/" + digestOf([]byte("no such manifest"))},
		{http.MethodGet, "/v2/library/app/blobs/" + digestOf([]byte("no such blob"))},
		{http.MethodHead, "/v2/library/app/blobs/" + digestOf([]byte("no such blob"))},
		{http.MethodGet, "/v2/library/app/tags/list"},
	}
	type result struct {
		what string
		code int
		body []byte
		err  error
	}
	results := make(chan result, 20*len(stalled))
	var wg sync.WaitGroup
	for range 20 {
		for _, s := range stalled {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, body, err := do(s.method, s.path)
				results <- result{s.method + " " + s.path, code, body, err}
			}()
		}
	}

	// Meanwhile the node answers everything else: the other origin's content, a blob whose only
	// provider is the silent peer (its fetch goes around it to the origin), its probes.
	for _, p := range []string{"/v2/", "/healthz", "/readyz"} {
		if code, _, err := do(http.MethodGet, p); err != nil || code != 200 {
			t.Errorf("GET %s while stalled: %d, %v", p, code, err)
		}
	}
	code, body, err := do(http.MethodGet, "/v2/test/small/blobs/"+sd.String()+ns)
	if err != nil || code != 200 || !bytes.Equal(body, small) {
		t.Errorf("a blob provided by a silent peer, while stalled: %d, %d bytes, %v", code, len(body), err)
	}

	// The slow reader: a byte a second of the cached blob.
	type slowResult struct {
		n     int64 // bytes the client received in all
		ended bool  // the node ended the response while the client was still reading slowly
	}
	slowEnded := make(chan slowResult, 1)
	before := blobsServed(t, a)
	go func() {
		conn, err := net.Dial("tcp", a.host)
		if err != nil {
			slowEnded <- slowResult{n: -1}
			return
		}
		defer conn.Close()
		_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
		fmt.Fprintf(conn, "GET /v2/test/big/blobs/%s%s HTTP/1.1\r\nHost: x\r\n\r\n", d, ns)
		br := bufio.NewReaderSize(conn, 16)
		var r slowResult
		for range 60 { // at most a minute; the node cuts it off long before
			if _, err := br.ReadByte(); err != nil {
				break
			}
			r.n++
			if blobsServed(t, a) > before {
				r.ended = true // the node has ended the response
				break
			}
			time.Sleep(time.Second)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, _ := io.Copy(io.Discard, br)
		r.n += m
		slowEnded <- r
	}()

	wg.Wait()
	close(results)
	for r := range results {
		switch {
		case r.err != nil:
			t.Errorf("%s: %v, want 503 UNAVAILABLE", r.what, r.err)
		case r.code != http.StatusServiceUnavailable:
			t.Errorf("%s: %d %s, want 503 UNAVAILABLE", r.what, r.code, r.body)
		case len(r.body) > 0 && ociCode(r.body) != "UNAVAILABLE":
			t.Errorf("%s: body %s, want an OCI UNAVAILABLE error", r.what, r.body)
		}
	}
	if r := <-slowEnded; !r.ended || r.n < 0 || r.n >= int64(len(data)) {
		t.Errorf("the slow reader received %d of %d bytes (the node ended the response: %v), want its response cut by the node", r.n, len(data), r.ended)
	}
	if v := counter(t, a.Gatherer(), "shoal_http_first_byte_timeouts_total", ""); v < float64(len(stalled)) {
		t.Errorf("shoal_http_first_byte_timeouts_total = %v", v)
	}

	// Every stalled request has ended: what they held is released, apart from the one
	// resolution per tag or digest still waiting on the origin in the background.
	var g, fd int
	waitFor(t, func() bool {
		runtime.GC()
		g, fd = runtime.NumGoroutine(), openFDs(t)
		return g <= baseG+60 && fd <= baseFD+20
	}, fmt.Sprintf("goroutines and descriptors to come back (from %d and %d)", baseG, baseFD))
}

// blobsServed is how many blob responses the node has finished with 200, or cut short
// ("aborted"); it counts a request when its handler returns.
func blobsServed(t *testing.T, a *node) float64 {
	t.Helper()
	mfs, err := a.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "shoal_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var blob, ok bool
			for _, l := range m.GetLabel() {
				blob = blob || (l.GetName() == "endpoint" && l.GetValue() == "blob")
				ok = ok || (l.GetName() == "code" && (l.GetValue() == "200" || l.GetValue() == "aborted"))
			}
			if blob && ok {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// An origin that starts to accept and never answer, after the node resolved a tag: the next
// pull of the tag gets the node's last resolution (stale) within the first-byte bound, rather
// than 503 once the bound passes while the origin's own timeouts and retries run.
func TestStaleTagWithinTheBoundWhenTheOriginHangs(t *testing.T) {
	o := startOrigin(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/app:v1", img)
	target, _ := url.Parse(o.URL())
	var hang atomic.Bool
	stop := make(chan struct{})
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select { // accepted, and never answered
			case <-stop:
			case <-r.Context().Done():
			}
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { close(stop); front.Close() })
	// A first-byte bound shorter than the origin client's own header timeout (30 s): the stale
	// answer must come before either.
	a := startAgentConfig(t, agent.Config{DataDir: t.TempDir(), Registries: []string{front.URL}, TagTTL: time.Second,
		FirstByteTimeout: 20 * time.Second})
	want := manifestDigest(t, img)
	if code, got := getManifestAt(t, a.host, "/v2/test/app/manifests/v1"); code != 200 || got != want {
		t.Fatalf("first pull: %d %s", code, got)
	}
	hang.Store(true)
	time.Sleep(1100 * time.Millisecond) // past the tag TTL: the record is stale now
	if code, got := getManifestAt(t, a.host, "/v2/test/app/manifests/v1"); code != 200 || got != want {
		t.Fatalf("pull of the tag with the origin hanging: %d %s, want 200 with the last resolution", code, got)
	}
	if v := counter(t, a.Gatherer(), "shoal_stale_tag_resolutions_total", ""); v < 1 {
		t.Errorf("shoal_stale_tag_resolutions_total = %v", v)
	}
}
