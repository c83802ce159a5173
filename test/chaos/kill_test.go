package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store/verify"
	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

// killRounds is how many times TestKillNineRounds kills a node.
const killRounds = 20

// TestKillNineRounds kills a `shoal seed` and a `shoal agent` (one of them or both, at random)
// with SIGKILL at a random moment while the seed preheats an image from the origin, the agent
// pulls a new image (which the seed, the authorized coordinator, fetches from the origin while the
// agent swarms from it), the agent pulls the previous image (a swarm fetch from the seed's
// committed copy), and a client pushes an image to the seed. Downloads are paced so that kills land
// in the middle of transfers, and commits happen all along. After each kill:
//
//   - `shoal store verify` (the real binary) finds every committed object of the killed nodes
//     whole, with a right chunk map, and refuses the data directory of a node still running;
//   - the nodes restart on their files; partial files the check said would be dropped are gone,
//     and every partial of the agent it said would resume is resumed with exactly the chunks it
//     counted (the agent logs what it holds again);
//   - the pulls and the push are done again and complete.
//
// No client ever receives a complete answer with wrong bytes: each checks its digest.
func TestKillNineRounds(t *testing.T) {
	bin := shoal.Path(t)
	rng := seededRand(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	origin := origins.StartDockerRegistry(t)

	const layers, layerSize = 3, 1536 << 10
	images := make([]testutil.Content, killRounds+1)
	pushes := make([]v1.Image, killRounds+1)
	for i := range images {
		img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), layers, layerSize)
		testutil.Push(ctx, t, fmt.Sprintf("%s/chaos/app:v%d", origin.Addr, i), img)
		images[i] = testutil.ImageContent(t, img)
		pushes[i] = testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 2, 1<<20)
	}

	seedDir, agentDir := t.TempDir(), t.TempDir()
	seedAddr, agentAddr := fixedAddr(t), fixedAddr(t)
	seedP2P, agentP2P := p2pAddr(t), p2pAddr(t)
	// 512 KiB chunks make every layer a swarm of several chunks, recorded as they land; 4 MB/s
	// makes each image take about a second, so that kills land mid-transfer.
	common := []string{"--chunk-size", "512KiB", "--max-download-rate", "4MB"}
	startSeed := func() *testutil.Agent {
		return testutil.StartNodeIn(t, bin, "seed", seedAddr, seedDir, []string{origin.URL}, append([]string{"--p2p-listen", seedP2P}, common...)...)
	}
	startAgent := func() *testutil.Agent {
		return testutil.StartNodeIn(t, bin, "agent", agentAddr, agentDir, []string{origin.URL},
			append([]string{"--p2p-listen", agentP2P, "--bootstrap", seedP2P}, common...)...)
	}
	seed := startSeed()
	agent := startAgent()
	preheat(ctx, t, seed, fmt.Sprintf("%s/chaos/app:v0", origin.Addr))

	var tl tally
	var resumed, dropped, commitsChecked int
	for round := 1; round <= killRounds; round++ {
		tag, prev := fmt.Sprintf("v%d", round), fmt.Sprintf("v%d", round-1)
		pushRef := fmt.Sprintf("%s/site/push:r%d", seedAddr, round)
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		work := func(what string, fn func() error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fn(); err != nil {
					t.Logf("round %d: %s: %v", round, what, err)
				}
			}()
		}
		work("seed preheat", func() error { return preheatErr(wctx, seed, fmt.Sprintf("%s/chaos/app:%s", origin.Addr, tag)) })
		work("agent pull of a new image", func() error { return tl.pull(wctx, agent.URL, origin.Addr, "chaos/app", tag, images[round]) })
		work("agent pull from the seed", func() error { return tl.pull(wctx, agent.URL, origin.Addr, "chaos/app", prev, images[round-1]) })
		work("push to the seed", func() error { return pushImage(wctx, pushRef, pushes[round]) })

		delay := 50*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))
		victim := rng.IntN(3) // 0: the agent, 1: the seed, 2: both
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		var killed []*testutil.Agent
		if victim != 1 {
			killed = append(killed, agent)
		}
		if victim != 0 {
			killed = append(killed, seed)
		}
		for _, n := range killed {
			if err := n.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("round %d: killed %s after %s", round, map[int]string{0: "the agent", 1: "the seed", 2: "both"}[victim], delay)
		stop()
		waitBounded(t, &wg, requestTimeout+10*time.Second, "the clients to end after the kill")

		if victim != 2 {
			// The node still running keeps its directory: a check is refused, not made on
			// files in use.
			running := map[int]*testutil.Agent{0: seed, 1: agent}[victim]
			if out, err := testutil.Run(ctx, bin, "store", "verify", "--data-dir", running.DataDir); err == nil || !strings.Contains(out, "in use") {
				t.Errorf("round %d: shoal store verify on a running node's data directory: %v\n%s", round, err, out)
			}
		}
		var reports []*verify.Report
		var agentReport *verify.Report
		for _, n := range killed {
			rep := verifyStore(ctx, t, bin, n.DataDir)
			reports = append(reports, rep)
			commitsChecked += len(rep.Objects)
			if n == agent {
				agentReport = rep
			}
		}
		if t.Failed() {
			t.Fatalf("round %d: stopping at the first failure (its random seed is logged above)", round)
		}
		if victim != 1 {
			agent = startAgent()
		}
		if victim != 0 {
			seed = startSeed()
		}
		for _, rep := range reports {
			for _, p := range rep.Partials {
				if p.Outcome == verify.Drop && p.Path != "" {
					if _, err := os.Stat(p.Path); !os.IsNotExist(err) {
						t.Errorf("round %d: partial %s was to be dropped at start; after the restart: %v", round, p.Path, err)
					}
					dropped++
				}
			}
		}

		// The same work again, uninterrupted: everything completes.
		if err := tl.pull(ctx, agent.URL, origin.Addr, "chaos/app", tag, images[round]); err != nil {
			t.Errorf("round %d: pulling %s after the restart: %v", round, tag, err)
		}
		if err := tl.pull(ctx, agent.URL, origin.Addr, "chaos/app", prev, images[round-1]); err != nil {
			t.Errorf("round %d: pulling %s after the restart: %v", round, prev, err)
		}
		if err := pushImage(ctx, pushRef, pushes[round]); err != nil {
			t.Errorf("round %d: pushing %s after the restart: %v", round, pushRef, err)
		} else if err := tl.pull(ctx, seed.URL, "", "site/push", fmt.Sprintf("r%d", round), testutil.ImageContent(t, pushes[round])); err != nil {
			t.Errorf("round %d: reading the push back from the seed: %v", round, err)
		}
		if agentReport != nil {
			resumed += checkResumed(t, round, agent, agentReport, images[round], images[round-1])
		}
		if t.Failed() {
			t.Fatalf("round %d: stopping at the first failure (its random seed is logged above)", round)
		}
	}

	// A clean stop leaves stores that verify too.
	for _, n := range []*testutil.Agent{agent, seed} {
		if err := n.Proc.Stop(); err != nil {
			t.Errorf("%s did not stop cleanly: %v", n.Proc.Name(), err)
		}
		verifyStore(ctx, t, bin, n.DataDir)
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, w := range tl.wrong {
		t.Error(w)
	}
	t.Logf("%d rounds: %d complete answers (all right), %d cut short; %d committed objects verified after kills; %d partials resumed with the chunks the check counted, %d dropped at start",
		killRounds, tl.complete, tl.broken, commitsChecked, resumed, dropped)
}

// checkResumed checks that every partial of the agent that the check said would resume, with at
// least one chunk, and that the round's pulls then fetched, was resumed holding exactly the
// chunks the check counted: the agent logs "resuming a partial blob" with chunks_held.
func checkResumed(t *testing.T, round int, agent *testutil.Agent, rep *verify.Report, imgs ...testutil.Content) int {
	t.Helper()
	pulled := map[digest.Digest]bool{}
	for _, c := range imgs {
		for _, d := range c.Blobs {
			pulled[digest.Digest(d)] = true
		}
	}
	held := resumeLog(agent.Proc.Output())
	n := 0
	for _, p := range rep.Partials {
		if p.Outcome != verify.Resume || p.Verified == 0 || !pulled[p.Digest] {
			continue
		}
		got, ok := held[p.Digest]
		if !ok || got != p.Verified {
			t.Errorf("round %d: partial %s: the check counted %d chunks that verify; the agent resumed it with %d (logged: %v)",
				round, p.Digest, p.Verified, got, ok)
			continue
		}
		n++
	}
	return n
}

// resumeLog reads the chunks each resumed partial held again from a node's JSON log.
func resumeLog(out string) map[digest.Digest]int {
	held := map[digest.Digest]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "resuming a partial blob") {
			continue
		}
		var rec struct {
			Msg    string        `json:"msg"`
			Digest digest.Digest `json:"digest"`
			Held   int           `json:"chunks_held"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "resuming a partial blob" {
			held[rec.Digest] = rec.Held
		}
	}
	return held
}

// preheat has a seed fetch and pin ref, and fails the test unless it does.
func preheat(ctx context.Context, t *testing.T, seed *testutil.Agent, ref string) {
	t.Helper()
	if err := preheatErr(ctx, seed, ref); err != nil {
		t.Fatal(err)
	}
}

func preheatErr(ctx context.Context, seed *testutil.Agent, ref string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, seed.URL+"/shoal/v1/preheat", strings.NewReader(`{"ref":"`+ref+`"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("preheat %s: %s", ref, resp.Status)
	}
	var last struct {
		Event string `json:"event"`
		Error string `json:"error"`
	}
	dec := json.NewDecoder(resp.Body)
	for dec.More() {
		if err := dec.Decode(&last); err != nil {
			return fmt.Errorf("preheat %s: %w", ref, err)
		}
	}
	if last.Event != "done" {
		return fmt.Errorf("preheat %s ended with %q %s", ref, last.Event, last.Error)
	}
	return nil
}

// pushImage pushes img to ref (HOST:PORT/repo:tag) over plain HTTP with ggcr's client.
func pushImage(ctx context.Context, ref string, img v1.Image) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return remote.Write(r, img, remote.WithContext(ctx), remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
		remote.WithTransport(pacedUploads{http.DefaultTransport}))
}

// uploadRate paces the bodies pushImage sends, so that a push lasts long enough to be killed.
const uploadRate = 2 << 20 // bytes a second

// pacedUploads sends request bodies at uploadRate.
type pacedUploads struct{ base http.RoundTripper }

func (p pacedUploads) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		req = req.Clone(req.Context())
		req.Body = &pacedBody{ctx: req.Context(), r: req.Body}
	}
	return p.base.RoundTrip(req)
}

type pacedBody struct {
	ctx context.Context
	r   io.ReadCloser
}

func (b *pacedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p[:min(len(p), 32<<10)])
	select {
	case <-time.After(time.Duration(n) * time.Second / uploadRate):
	case <-b.ctx.Done():
		return n, b.ctx.Err()
	}
	return n, err
}

func (b *pacedBody) Close() error { return b.r.Close() }

func p2pAddr(t *testing.T) string {
	t.Helper()
	host, port, _ := strings.Cut(fixedAddr(t), ":")
	return fmt.Sprintf("/ip4/%s/tcp/%s", host, port)
}

// waitBounded waits for wg, failing the test if that takes longer than d.
func waitBounded(t *testing.T, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}
