package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/internal/tags"
)

// pullAll has every node GET the blob at the same moment and returns the bodies.
func pullAll(t *testing.T, nodes []*node, repo string, d digest.Digest) [][]byte {
	t.Helper()
	bodies := make([][]byte, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			bodies[i], errs[i] = getBlob(t, nd.host, repo, d)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}
	return bodies
}

// Six nodes ask for a blob nobody holds at the same instant: its coordinator fetches it from the
// origin once and the others stream it from the coordinator as it arrives. The origin sends at
// 2 MiB/s, as a remote one does: an unpaced origin on loopback delivers the blob in tens of
// milliseconds, and every requester may be done before its first lookup for other providers
// (rediscoverEvery, 1 s), so whether chunks spread between requesters would depend on the
// machine's speed.
func TestSimultaneousRequestsFetchOnce(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 8<<20+12345)
	pushBlob(t, o, "test/big", data, d)
	nodes := cluster(t, 6, pacedOrigin(t, o, 2<<20))
	o.ResetCounts()

	for i, body := range pullAll(t, nodes, "test/big", d) {
		if !bytes.Equal(body, data) {
			t.Fatalf("node %d got wrong content", i+1)
		}
	}
	if n := o.BlobGets(d.String()); n != 1 {
		t.Fatalf("origin saw %d GETs of the blob, want 1", n)
	}
	var coordinators, fromPeers int
	for i, nd := range nodes {
		path := filepath.Join(nd.dir, "blobs", "sha256", d.Encoded())
		waitFor(t, func() bool { _, err := os.Stat(path); return err == nil }, fmt.Sprintf("node %d to commit", i+1))
		if stored, _ := os.ReadFile(path); !bytes.Equal(stored, data) {
			t.Fatalf("node %d stored wrong content", i+1)
		}
		if counter(t, nd.Gatherer(), "shoal_fetched_bytes_total", "origin") > 0 {
			coordinators++
		}
		if counter(t, nd.Gatherer(), "shoal_fetched_bytes_total", "peer") == float64(len(data)) {
			fromPeers++
		}
	}
	if coordinators != 1 || fromPeers != len(nodes)-1 {
		t.Fatalf("%d nodes fetched from the origin and %d wholly from peers; want 1 and %d", coordinators, fromPeers, len(nodes)-1)
	}
	// The chunks spread between the requesters: the coordinator sends a chunk to one peer at a
	// time, so the others take it from whoever holds it.
	var fetches, providers uint64
	var per []float64
	for _, nd := range nodes {
		count, sum := histogram(t, nd, "shoal_fetch_providers")
		fetches += count
		providers += uint64(sum)
		per = append(per, sum)
	}
	t.Logf("providers per node's fetch: %v", per)
	if fetches != uint64(len(nodes)-1) || providers <= fetches {
		t.Fatalf("%d fetches from peers used %d providers in all; want %d fetches, some from several peers", fetches, providers, len(nodes)-1)
	}
}

// pacedOrigin fronts origin o with a proxy that sends blob bodies at about rate bytes a second,
// and returns the proxy's URL.
func pacedOrigin(t *testing.T, o *devregistry.Registry, rate int64) string {
	t.Helper()
	u, err := url.Parse(o.URL())
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = tr
	rp.FlushInterval = -1 // every write goes out at once: the agent sees the pace
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/blobs/") {
			resp.Body = &pacedBody{ReadCloser: resp.Body, rate: rate}
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
	return srv.URL
}

// pacedBody reads no faster than rate bytes a second.
type pacedBody struct {
	io.ReadCloser
	rate  int64
	n     int64
	start time.Time
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if b.start.IsZero() {
		b.start = time.Now()
	}
	if ahead := time.Duration(b.n*int64(time.Second)/b.rate) - time.Since(b.start); ahead > 0 {
		time.Sleep(ahead)
	}
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// histogram returns a node's sample count and sum of a histogram without labels. A fetch
// records its providers before it commits.
func histogram(t *testing.T, nd *node, name string) (count uint64, sum float64) {
	t.Helper()
	mfs, err := nd.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	return 0, 0
}

// The coordinator dies in the middle of its fetch: the others resume where they were, from the
// origin, and all complete.
func TestCoordinatorKilledMidFetch(t *testing.T) {
	const size = 6 << 20
	data, d := randomBlob(t, size)
	release := make(chan struct{})
	var gets atomic.Int32
	// The origin sends the first 3 MiB to whoever asks first (the coordinator), then stalls it
	// until released; later requests (resumes) are served whole at once.
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			http.NotFound(w, r)
			return
		}
		n := gets.Add(1)
		body := data
		if rng := r.Header.Get("Range"); rng != "" {
			var a, b int
			fmt.Sscanf(rng, "bytes=%d-%d", &a, &b)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, size-1, size))
			w.Header().Set("Content-Length", fmt.Sprint(size-a))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[a:])
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(size))
		if n == 1 {
			w.Write(body[:3<<20])
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Write(body)
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })

	nodes := cluster(t, 4, "http://"+ln.Addr().String())
	coord, self, err := nodes[0].Node().Coordinator(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	var victim *node
	var others []*node
	for _, nd := range nodes {
		if (self && nd == nodes[0]) || (!self && nd.Node().ID() == coord) {
			victim = nd
		} else {
			others = append(others, nd)
		}
	}
	if victim == nil {
		t.Fatal("no node is the coordinator")
	}
	type result struct {
		body []byte
		err  error
	}
	results := make(chan result, len(others))
	for _, nd := range others {
		go func() { b, err := getBlob(t, nd.host, "test/big", d); results <- result{b, err} }()
	}
	// Once the others are streaming from the coordinator, kill it. (A node whose view of the DHT
	// has not converged may name another coordinator, itself included, and go to the origin.)
	waitFor(t, func() bool {
		for _, nd := range others {
			if counter(t, nd.Gatherer(), "shoal_fetched_bytes_total", "peer") < 2<<20 &&
				counter(t, nd.Gatherer(), "shoal_fetched_bytes_total", "origin") == 0 {
				return false
			}
		}
		return true
	}, "the others to stream from the coordinator")
	victim.stop()
	once.Do(func() { close(release) }) // unblock any other first request to the origin
	for range others {
		r := <-results
		if r.err != nil || !bytes.Equal(r.body, data) {
			t.Fatalf("pull after the coordinator died: %v", r.err)
		}
	}
}

// Six nodes resolve the same tag at once: the tag's coordinator, an authorized seed, asks the
// origin once for all. (Without a seed every node confirms the tag with a HEAD of its own: a
// plain node's word on a tag is a hint at most.)
func TestTagBurstCostsOneOriginRequest(t *testing.T) {
	o := startOrigin(t)
	img, err := devregistry.Image([]int64{256 << 10}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/app:v1", img)
	nodes := seededCluster(t, 6, o.URL())
	// One coordinator per tag is a property of a converged cluster: wait until every node names
	// the same one (a node whose view of the DHT is still partial may name another, and that one
	// asks the origin too, as designed).
	key := "shoal-tag:" + tags.Prefix(o.Host(), "test/app", "v1")
	waitFor(t, func() bool {
		var first peer.ID
		for i, nd := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, _, err := nd.Node().CoordinatorFor(ctx, key)
			cancel()
			if err != nil || (i > 0 && c != first) {
				return false
			}
			first = c
		}
		return true
	}, "the nodes to agree on the tag's coordinator")
	o.ResetCounts()
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	for _, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, "http://"+nd.host+"/v2/test/app/manifests/v1", nil)
			req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	tagRequests := o.Count(http.MethodHead, "/v2/test/app/manifests/v1") + o.Count(http.MethodGet, "/v2/test/app/manifests/v1")
	if tagRequests > 2 { // one HEAD, and one GET for a manifest nobody stored yet
		t.Fatalf("origin saw %d requests for the tag from a burst of %d nodes", tagRequests, len(nodes))
	}
}

// A blob several peers hold is fetched from several of them at once, ahead of the reader.
func TestChunksFromSeveralPeers(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 12<<20)
	pushBlob(t, o, "test/big", data, d)
	nodes := cluster(t, 5, o.URL())
	for _, nd := range nodes[:3] {
		if body, err := getBlob(t, nd.host, "test/big", d); err != nil || !bytes.Equal(body, data) {
			t.Fatal(err)
		}
		path := filepath.Join(nd.dir, "blobs", "sha256", d.Encoded())
		waitFor(t, func() bool { _, err := os.Stat(path); return err == nil }, "commit")
	}
	// The blob's coordinator may be one of the other two, holding it from the origin: take one
	// that holds nothing.
	var last *node
	for _, nd := range nodes[3:] {
		if _, err := os.Stat(filepath.Join(nd.dir, "blobs", "sha256", d.Encoded())); os.IsNotExist(err) {
			last = nd
		}
	}
	if last == nil {
		t.Fatal("every node holds the blob already")
	}
	waitFor(t, func() bool {
		ps, _ := last.Node().FindProviders(context.Background(), d)
		return len(ps) >= 3
	}, "three providers")
	body, err := getBlob(t, last.host, "test/big", d)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("pull: %v", err)
	}
	var count uint64
	var sum float64
	waitFor(t, func() bool { // the fetch records its providers when it ends, just after the client
		mfs, _ := last.Gatherer().Gather()
		for _, mf := range mfs {
			if mf.GetName() == "shoal_fetch_providers" && len(mf.GetMetric()) > 0 {
				h := mf.GetMetric()[0].GetHistogram()
				count, sum = h.GetSampleCount(), h.GetSampleSum()
			}
		}
		return count > 0
	}, "the fetch to end")
	if count != 1 || sum < 2 {
		t.Fatalf("the fetch used %v providers (%d fetches), want several", sum, count)
	}
}
