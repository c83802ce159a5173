package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

const (
	// churnNodes is the cluster's size.
	churnNodes = 10
	// churnRounds is how many images the cluster pulls; in each but the first, churnKills nodes
	// are killed and started again while it pulls.
	churnRounds = 6
	churnKills  = 2
	// pullBound bounds one node's pull of one image, retries after its node's restart included.
	pullBound = 2 * time.Minute
	// churnRegistry is the name every node gives the origin; each reaches it through its own
	// listener of the counting proxy.
	churnRegistry = "origin.test"
)

// TestChurn: ten `shoal agent` processes pull a multi-layer image from a real registry
// (Debian's docker-registry) behind a counting proxy, all at once, while nodes are killed with
// SIGKILL and started again every second or so. It checks that
//
//   - every pull that completes has the right bytes (each client checks every digest), and every
//     node completes its pull (retrying after its own restart) within pullBound; no request
//     hangs past requestTimeout;
//   - with no churn, the origin sends each blob once (the first round);
//   - under churn, the origin sends no more copies of a blob than docs/operations.md allows
//     ("Churn and the origin"): one, plus churnNodes-1 for each node killed after it had begun
//     fetching that blob from the origin, plus one for each node started while it was pulled.
func TestChurn(t *testing.T) {
	bin := shoal.Path(t)
	rng := seededRand(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	origin := origins.StartDockerRegistry(t)
	proxy := startCountingProxy(t, origin.URL, churnNodes)

	images := make([]testutil.Content, churnRounds)
	sizes := map[string]int64{}
	for r := range images {
		img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 3, 2<<20)
		testutil.Push(ctx, t, fmt.Sprintf("%s/churn/app:v%d", origin.Addr, r), img)
		images[r] = testutil.ImageContent(t, img)
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		sizes[m.Config.Digest.String()] = m.Config.Size
		for _, l := range m.Layers {
			sizes[l.Digest.String()] = l.Size
		}
	}

	c := &cluster{t: t, bin: bin, proxy: proxy}
	for range churnNodes {
		c.addrs = append(c.addrs, fixedAddr(t))
		c.dirs = append(c.dirs, t.TempDir())
		c.p2p = append(c.p2p, p2pAddr(t))
	}
	for i := range churnNodes {
		c.start(i)
	}
	c.waitJoined(ctx)

	var tl tally
	for r := range churnRounds {
		tag := fmt.Sprintf("v%d", r)
		c.resetRound()
		var wg sync.WaitGroup
		for i := range churnNodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.pullUntilDone(ctx, &tl, i, tag, images[r])
			}()
		}
		if r > 0 {
			for range churnKills {
				sleep(ctx, 100*time.Millisecond+time.Duration(rng.Int64N(int64(time.Second))))
				// Half the kills aim at a node fetching from the origin (a coordinator, most
				// often): the costly case; the others at any node.
				i := rng.IntN(churnNodes)
				if fetching := c.originFetchers(); len(fetching) > 0 && rng.IntN(2) == 0 {
					i = fetching[rng.IntN(len(fetching))]
				}
				c.kill(i)
				sleep(ctx, 200*time.Millisecond+time.Duration(rng.Int64N(int64(time.Second))))
				c.start(i)
			}
		}
		waitBounded(t, &wg, pullBound+30*time.Second, "every node's pull of "+tag)
		kills, starts, midFetch := c.roundChurn()
		var lines []string
		for _, d := range images[r].Blobs {
			sent, gets := proxy.sent(d)
			allowed := 1 + (churnNodes-1)*midFetch[d] + starts
			copies := float64(sent) / float64(sizes[d])
			lines = append(lines, fmt.Sprintf("%s: %.2f copies in %d GETs (allowed %d; %d of its origin fetchers killed)", d[:19], copies, gets, allowed, midFetch[d]))
			if sent > int64(allowed)*sizes[d] {
				t.Errorf("round %d: the origin sent %.2f copies of %s (%d bytes in %d GETs), more than the %d allowed after %d kills (%d of its fetchers) and %d starts",
					r, copies, d, sent, gets, allowed, kills, midFetch[d], starts)
			}
		}
		t.Logf("round %d: %d kills, %d starts; origin:\n  %s", r, kills, starts, strings.Join(lines, "\n  "))
		if t.Failed() {
			t.FailNow()
		}
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, w := range tl.wrong {
		t.Error(w)
	}
	t.Logf("%d rounds on %d nodes: %d complete answers (all right), %d cut short", churnRounds, churnNodes, tl.complete, tl.broken)
}

// cluster is the churn test's nodes: each keeps its address, data directory and peer address
// across restarts.
type cluster struct {
	t     *testing.T
	bin   string
	proxy *countingProxy
	addrs []string
	dirs  []string
	p2p   []string

	mu       sync.Mutex
	nodes    []*testutil.Agent // nil while killed
	kills    int
	starts   int
	midFetch map[string]int // blob -> kills of a node that fetched it from the origin, this round
}

func (c *cluster) start(i int) {
	c.t.Helper()
	args := []string{"--p2p-listen", c.p2p[i], "--chunk-size", "1MiB", "--max-download-rate", "8MB"}
	for j := range 3 {
		if j != i {
			args = append(args, "--bootstrap", c.p2p[j])
		}
	}
	n := testutil.StartNodeIn(c.t, c.bin, "agent", c.addrs[i], c.dirs[i], []string{churnRegistry + "=" + c.proxy.URLs[i]}, args...)
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.nodes) <= i {
		c.nodes = append(c.nodes, nil)
	}
	c.nodes[i] = n
	c.starts++
}

func (c *cluster) kill(i int) {
	c.t.Helper()
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	fetching := c.proxy.fetching(i)
	for _, d := range c.proxy.askedFor(i) {
		c.midFetch[d]++
	}
	c.kills++
	c.mu.Unlock()
	if err := n.Kill(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Logf("killed node %d (fetching %v from the origin)", i, fetching)
}

// originFetchers returns the live nodes fetching a blob from the origin now.
func (c *cluster) originFetchers() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, n := range c.nodes {
		if n != nil && len(c.proxy.fetching(i)) > 0 {
			out = append(out, i)
		}
	}
	return out
}

func (c *cluster) resetRound() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kills, c.starts, c.midFetch = 0, 0, map[string]int{}
	c.proxy.reset()
}

func (c *cluster) roundChurn() (kills, starts int, midFetch map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kills, c.starts, c.midFetch
}

// waitJoined waits until every node is connected to at least two others.
func (c *cluster) waitJoined(ctx context.Context) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for i := range churnNodes {
		for peers(ctx, c.addrs[i]) < 2 {
			if ctx.Err() != nil {
				c.t.Fatalf("node %d did not join the cluster", i)
			}
			sleep(ctx, 100*time.Millisecond)
		}
	}
}

// pullUntilDone pulls the image through node i until a pull completes, retrying while the node
// is down or restarting, for at most pullBound. A request that does not end within
// requestTimeout fails the test: a node must answer or fail, never hang.
func (c *cluster) pullUntilDone(ctx context.Context, tl *tally, i int, tag string, img testutil.Content) {
	ctx, cancel := context.WithTimeout(ctx, pullBound)
	defer cancel()
	var last error
	for attempt := 0; ctx.Err() == nil && attempt < 200; attempt++ {
		last = tl.pull(ctx, "http://"+c.addrs[i], churnRegistry, "churn/app", tag, img)
		if last == nil {
			return
		}
		if errors.Is(last, context.DeadlineExceeded) && ctx.Err() == nil {
			c.t.Errorf("node %d: a request hung past %s: %v", i, requestTimeout, last)
			return
		}
		sleep(ctx, 250*time.Millisecond)
	}
	c.t.Errorf("node %d never completed its pull of %s within %s: %v", i, tag, pullBound, last)
}

// peers returns how many peers the node at addr is connected to (0 when it does not answer).
func peers(ctx context.Context, addr string) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/shoal/v1/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var s struct {
		ConnectedPeers []string `json:"connectedPeers"`
	}
	if json.NewDecoder(resp.Body).Decode(&s) != nil {
		return 0
	}
	return len(s.ConnectedPeers)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}
