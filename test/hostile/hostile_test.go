// Package hostile drives a real `shoal agent` process with hostile load: thousands of requests
// of random methods, Accept headers, names, digests and ranges, then a thousand idle
// connections, and checks that what the node holds stays within the bounds docs/operations.md
// states: metric series, meta.db, goroutines, descriptors and memory.
package hostile

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/test/testutil"
)

var shoal testutil.LazyBinary

func TestMain(m *testing.M) {
	code := m.Run()
	shoal.Remove()
	os.Exit(code)
}

const (
	requests = 10000
	workers  = 16
	idle     = 1000
	// maxConns is the agent's --max-connections here: below idle, so the cap is reached.
	maxConns = 256
)

// Bounds asserted after the load (docs/operations.md, "Bounds at the HTTP and peer edges").
const (
	// maxSeries: Go and process collectors (about 80 series), the node's own counters and
	// histograms by fixed labels (endpoint x method x code for /v2 is the largest: 7 x 8 x the
	// status codes the node answers).
	maxSeries = 800
	// maxMetaDB: bbolt's file for a handful of tag records, whatever Accept headers came.
	maxMetaDB = 512 << 10
	// maxTagHeads: one origin HEAD per tag and normalized Accept set (16: no known type, or one
	// of the 15 non-empty subsets of the four known manifest types) within the tag TTL. Keyed by
	// the raw Accept header, it was one per distinct header.
	maxTagHeads = 16
	// Goroutines and descriptors while the idle connections are open: one of each per connection
	// admitted (maxConns), plus the node's own.
	maxGoroutines = maxConns + 250
	maxFDs        = maxConns + 150
	// maxRSS: the agent's resident memory (a race-detector build needs several times more).
	maxRSS     = 512 << 20
	maxRSSRace = 2 << 30
)

func TestHostileLoad(t *testing.T) {
	bin := shoal.Path(t)
	o, err := devregistry.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := devregistry.Push(o.Host()+"/test/app:v1", img); err != nil {
		t.Fatal(err)
	}
	md, _ := img.Digest()
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	metricsAddr := testutil.FreeAddr(t)
	a := testutil.StartAgent(t, bin, []string{o.URL()}, "--p2p=false", "--tag-ttl", "10m",
		"--max-connections", fmt.Sprint(maxConns), "--metrics-listen", metricsAddr)
	o.ResetCounts()

	rng := rand.New(rand.NewPCG(14, 5))
	var mu sync.Mutex
	pick := func(xs ...string) string { mu.Lock(); defer mu.Unlock(); return xs[rng.IntN(len(xs))] }
	randStr := func(n int) string {
		mu.Lock()
		defer mu.Unlock()
		const alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
		b := make([]byte, n)
		for i := range b {
			b[i] = alpha[rng.IntN(len(alpha))]
		}
		return string(b)
	}
	known := []string{
		"application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
		"application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json",
	}
	accept := func() string {
		var parts []string
		mu.Lock()
		n := 1 + rng.IntN(6)
		mu.Unlock()
		for range n {
			switch pick("known", "known", "made-up", "param", "wild", "long") {
			case "long": // one header of about 8 KiB
				for range 128 {
					parts = append(parts, "application/vnd.example."+randStr(40)+"+json")
				}
			case "known":
				parts = append(parts, pick(known...))
			case "made-up":
				parts = append(parts, "application/x-"+randStr(12))
			case "param":
				parts = append(parts, pick(known...)+";q=0."+randStr(1)+";x="+randStr(6))
			case "wild":
				parts = append(parts, pick("*/*", "application/*", "text/html"))
			}
		}
		return strings.Join(parts, ", ")
	}
	name := func() string {
		return pick("test/app", "test/app", "test/app", "library/"+randStr(8), randStr(5)+"/"+randStr(7), "UPPER/case", "a/../b", "x%2Fy")
	}
	dgst := func() string {
		return pick(md.String(), ld.String(), "sha256:"+strings.Repeat(randStr(1), 64), "sha256:"+randStr(10), "md5:"+randStr(32))
	}
	path := func() string {
		switch pick("manifest", "manifest", "blob", "blob", "tags", "referrers", "base", "junk") {
		case "manifest":
			return "/v2/" + name() + "/manifests/" + pick("v1", "v1", "v1", "latest", randStr(10), dgst())
		case "blob":
			return "/v2/" + name() + "/blobs/" + dgst()
		case "tags":
			return "/v2/" + name() + "/tags/list?n=" + pick("1", "100000", "-1", "x")
		case "referrers":
			return "/v2/" + name() + "/referrers/" + dgst()
		case "base":
			return "/v2/"
		}
		return "/" + randStr(6) + "/" + randStr(9)
	}

	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var wg sync.WaitGroup
	var failMu sync.Mutex
	var failures []string
	jobs := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				method := pick("GET", "GET", "GET", "HEAD", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS",
					"X"+strings.ToUpper(randStr(7)), "BREW")
				p := path()
				if pick("ns", "none", "none") == "ns" {
					sep := "?"
					if strings.Contains(p, "?") {
						sep = "&"
					}
					p += sep + "ns=" + url.QueryEscape(pick(o.Host(), randStr(6)+".example", "not a host", "a/b"))
				}
				req, err := http.NewRequest(method, a.URL+p, nil)
				if err != nil {
					continue // a path the client itself refuses
				}
				req.Header.Set("Accept", accept())
				if pick("range", "none") == "range" {
					req.Header.Set("Range", pick("bytes=0-9", "bytes=5-", "bytes=-3", "bytes=9-1", "bytes=0-1,3-4", "pages=1", "bytes=99999999-"))
				}
				resp, err := client.Do(req)
				if err != nil {
					failMu.Lock()
					failures = append(failures, fmt.Sprintf("%s %s: %v", method, p, err))
					failMu.Unlock()
					continue
				}
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				// Every /v2 refusal is an OCI error body.
				if (p == "/v2/" || strings.HasPrefix(p, "/v2/")) && resp.StatusCode >= 400 && method != http.MethodHead {
					var e struct {
						Errors []struct{ Code string } `json:"errors"`
					}
					if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
						failMu.Lock()
						failures = append(failures, fmt.Sprintf("%s %s: %d with body %.200q", method, p, resp.StatusCode, body))
						failMu.Unlock()
					}
				}
			}
		}()
	}
	for i := range requests {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	client.CloseIdleConnections()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed, e.g. %q", len(failures), requests, failures[:min(5, len(failures))])
	}

	// Request variety grew nothing: the tag cost a handful of origin HEADs, meta.db is small, and
	// every metric label came from a fixed set.
	if n := o.Count(http.MethodHead, "/v2/test/app/manifests/v1"); n > maxTagHeads {
		t.Errorf("the origin saw %d HEADs of test/app:v1 for random Accept headers, want at most %d", n, maxTagHeads)
	} else {
		t.Logf("origin HEADs of test/app:v1: %d (bound %d)", n, maxTagHeads)
	}
	if fi, err := os.Stat(filepath.Join(a.DataDir, "meta.db")); err != nil || fi.Size() > maxMetaDB {
		t.Errorf("meta.db: %v, %v; want at most %d bytes", fi.Size(), err, maxMetaDB)
	} else {
		t.Logf("meta.db: %d bytes (bound %d)", fi.Size(), maxMetaDB)
	}
	samples := metrics(t, "http://"+metricsAddr)
	if len(samples) > maxSeries {
		t.Errorf("%d metric series after the load, want at most %d", len(samples), maxSeries)
	}
	for _, s := range samples {
		if m, ok := s.Labels["method"]; ok && !strings.Contains(" GET HEAD PUT POST PATCH DELETE OPTIONS other ", " "+m+" ") {
			t.Errorf("a metric series has method %q, not one of the fixed set", m)
		}
	}

	// Idle connections: a thousand that send nothing. The node holds one goroutine and one
	// descriptor per admitted connection, and none for those past the cap.
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range idle {
		c, err := net.Dial("tcp", a.Addr)
		if err != nil {
			t.Fatalf("dialing idle connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	samples = metrics(t, "http://"+metricsAddr)
	check := func(metric string, limit float64) {
		t.Helper()
		v, ok := testutil.Sum(samples, metric, nil)
		if !ok {
			t.Errorf("%s is not exported", metric)
		} else if v > limit {
			t.Errorf("%s = %.0f with %d idle connections, want at most %.0f", metric, v, idle, limit)
		} else {
			t.Logf("%s = %.0f (bound %.0f)", metric, v, limit)
		}
	}
	check("go_goroutines", maxGoroutines)
	check("process_open_fds", maxFDs)
	rss := float64(maxRSS)
	if testutil.RaceEnabled {
		rss = maxRSSRace
	}
	check("process_resident_memory_bytes", rss)
	t.Logf("metric series: %d (bound %d)", len(samples), maxSeries)

	// Past the cap, a request is answered 503 with an OCI error (or, while many connections
	// are being refused at the same moment, its connection is closed at once: asked again).
	refused := false
	for range 50 {
		resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get(a.URL + "/v2/test/app/manifests/v1")
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"UNAVAILABLE"`) {
			t.Fatalf("a request past the cap: %d %s, want 503 UNAVAILABLE", resp.StatusCode, body)
		}
		refused = true
		break
	}
	if !refused {
		t.Error("no request past the cap was answered 503")
	}
	// No idle connection is left waiting: past the cap they are closed, and admitted ones once
	// their headers do not come within the read-header bound.
	var closed, hung int
	var rmu sync.Mutex
	var rwg sync.WaitGroup
	for _, c := range conns {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err := c.Read(make([]byte, 1))
			rmu.Lock()
			defer rmu.Unlock()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				hung++
			} else {
				closed++
			}
		}()
	}
	rwg.Wait()
	if hung > 0 {
		t.Errorf("idle connections: %d closed by the node, %d left waiting", closed, hung)
	}

	// Once the idle connections go, the node answers again.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	ok := false
	for range 100 { // the node sees the closes at its next read: bounded retries
		resp, err := http.Get(a.URL + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok = true
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !ok {
		t.Fatal("the node did not answer once the idle connections closed")
	}
}

func metrics(t *testing.T, base string) []testutil.Sample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	s, err := testutil.ParseMetrics(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
