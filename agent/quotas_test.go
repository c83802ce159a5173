package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/peerserve"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/keys"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// startMember starts a cluster member holding the swarm key: a real libp2p node that serves the
// real content protocol (from nothing) and whose client side the test drives, as a compromised
// node would.
func startMember(t *testing.T, swarmKey []byte, bootstrap ...string) *p2p.Node {
	t.Helper()
	n, err := p2p.New(p2p.Config{DataDir: t.TempDir(), ListenAddrs: []string{loopback}, Bootstrap: bootstrap, SwarmKey: swarmKey})
	if err != nil {
		t.Fatal(err)
	}
	transfer.NewServer(n.Host(), transfer.NewMemoryContent(), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; n.Close() })
	waitFor(t, func() bool { return n.RoutingTableSize() > 0 }, "the member to join")
	return n
}

// blobRequests counts the origin's requests for blobs of repo (GET and HEAD).
func blobRequests(o *devregistry.Registry, repo string) int {
	n := 0
	for k, v := range o.Requests() {
		method, path, _ := strings.Cut(k, " ")
		if (method == http.MethodGet || method == http.MethodHead) && strings.HasPrefix(path, "/v2/"+repo+"/blobs/sha256:") {
			n += v
		}
	}
	return n
}

// Attack 5, amplification: a member with the swarm key sends 200 `pull` requests for different
// digests (some in the origin, most made up) to a coordinator. The origin sees at most the
// member's quota of them, not one each; the member is answered busy past it, and an honest
// member's pull through the same coordinator still succeeds.
func TestPullAmplificationIsBounded(t *testing.T) {
	o := startOrigin(t)
	const repo = "test/amp"
	var real []digest.Digest
	for range 20 {
		data, d := randomBlob(t, 4<<10)
		pushBlob(t, o, repo, data, d)
		real = append(real, d)
	}
	honestData, honestDigest := randomBlob(t, 64<<10)
	pushBlob(t, o, repo, honestData, honestDigest)

	key, err := keys.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	co := startPeer(t, t.TempDir(), key, o.URL())
	liar := startMember(t, key, co.Node().Addrs()...)
	honest := startMember(t, key, co.Node().Addrs()...)
	o.ResetCounts()

	const pulls, workers = 200, 8
	digests := make(chan digest.Digest, pulls)
	for i := range pulls {
		if i%10 == 0 {
			digests <- real[i/10]
			continue
		}
		_, made := randomBlob(t, 64)
		digests <- made
	}
	close(digests)
	var mu sync.Mutex
	answers := map[string]int{}
	liarClient := transfer.NewClient(liar.Host())
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for d := range digests {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				err := liarClient.Pull(ctx, co.Node().ID(), o.Host(), repo, d)
				cancel()
				kind := "ok"
				switch {
				case errors.Is(err, transfer.ErrBusy):
					kind = "busy"
				case err != nil:
					kind = "failed"
				}
				mu.Lock()
				answers[kind]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Fetches the coordinator accepted may still be asking the origin: let them finish.
	waitFor(t, func() bool { return len(co.Blobs().Transfers()) == 0 }, "the coordinator's fetches to end")

	q := peerserve.DefaultPullQuota
	allowed := q.Burst + int(math.Ceil(q.PerSecond*elapsed.Seconds()))
	got := blobRequests(o, repo)
	t.Logf("200 pulls in %s: answers %v; the origin saw %d blob requests (quota: %d)", elapsed.Round(time.Millisecond), answers, got, allowed)
	if got > allowed {
		t.Errorf("the origin saw %d blob requests for one member's 200 pulls, more than its quota of %d", got, allowed)
	}
	if answers["busy"] == 0 {
		t.Error("the member was never answered busy")
	}

	honestClient := transfer.NewClient(honest.Host())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := honestClient.Pull(ctx, co.Node().ID(), o.Host(), repo, honestDigest); err != nil {
		t.Fatalf("an honest member's pull after the flood: %v", err)
	}
	rng, err := honestClient.Get(ctx, co.Node().ID(), honestDigest, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(rng)
	rng.Close()
	if err != nil || !bytes.Equal(body, honestData) {
		t.Fatalf("the honest member's blob from the coordinator: %v", err)
	}
}

// Pulls of a digest the origin does not have, from a member and from the node's own client,
// cost the origin one request while the "not found" is remembered.
func TestRepeatedNotFoundCostsOneOriginRequest(t *testing.T) {
	o := startOrigin(t)
	const repo = "test/missing"
	_, d := randomBlob(t, 4<<10) // never pushed
	key, err := keys.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	co := startAgentConfig(t, agent.Config{DataDir: t.TempDir(), Registries: []string{o.URL()}, ChunkSize: 1 << 20, PieceSize: 1 << 20,
		P2P:         &p2p.Config{ListenAddrs: []string{loopback}, SwarmKey: key},
		NotFoundTTL: time.Hour}) // far longer than the test: every repeat falls inside it
	member := startMember(t, key, co.Node().Addrs()...)
	o.ResetCounts()

	c := transfer.NewClient(member.Host())
	for i := range 8 { // within the member's pull quota: the memory alone keeps the origin out
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := c.Pull(ctx, co.Node().ID(), o.Host(), repo, d)
		cancel()
		if !errors.Is(err, transfer.ErrBusy) && (err == nil || !strings.Contains(err.Error(), "not found")) {
			t.Fatalf("pull %d of a missing blob: %v, want not found", i, err)
		}
	}
	for i := range 4 {
		if _, err := getBlob(t, co.host, repo, d); err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("client GET %d of a missing blob: %v, want 404", i, err)
		}
	}
	if n := blobRequests(o, repo); n != 1 {
		t.Fatalf("the origin saw %d requests for one missing blob, want 1", n)
	}
	// Another repository is another question.
	if _, err := getBlob(t, co.host, "test/elsewhere", d); err == nil {
		t.Fatal("a missing blob was served")
	}
	if n := blobRequests(o, "test/elsewhere"); n != 1 {
		t.Fatalf("the origin saw %d requests in another repository, want 1", n)
	}
}

// The same for tag resolutions: a member asking a coordinator to resolve 200 different tags costs
// the origin at most its resolve quota of manifest requests, not one each.
func TestResolveAmplificationIsBounded(t *testing.T) {
	o := startOrigin(t)
	const repo = "test/tags"
	img, err := devregistry.Image([]int64{1024}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		push(t, o, fmt.Sprintf("%s:t%d", repo, i), img)
	}
	key, err := keys.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	co := startPeer(t, t.TempDir(), key, o.URL())
	liar := startMember(t, key, co.Node().Addrs()...)
	o.ResetCounts()

	c := transfer.NewClient(liar.Host())
	tagsToAsk := make(chan string, 200)
	for i := range 200 {
		tagsToAsk <- fmt.Sprintf("t%d", i)
	}
	close(tagsToAsk)
	var mu sync.Mutex
	busy := 0
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for tag := range tagsToAsk {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				_, err := c.Resolve(ctx, co.Node().ID(), o.Host(), repo, tag, nil)
				cancel()
				mu.Lock()
				switch {
				case errors.Is(err, transfer.ErrBusy):
					busy++
				case err != nil:
					t.Errorf("resolving %s: %v", tag, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Each resolution asks the origin with one HEAD of the tag (then a GET while the manifest is
	// not stored yet).
	got := 0
	for k, v := range o.Requests() {
		if strings.HasPrefix(k, "HEAD /v2/"+repo+"/manifests/t") {
			got += v
		}
	}
	q := peerserve.DefaultResolveQuota
	allowed := q.Burst + int(math.Ceil(q.PerSecond*elapsed.Seconds()))
	t.Logf("200 resolves in %s: %d busy; the origin saw %d HEADs of tags (quota: %d)", elapsed.Round(time.Millisecond), busy, got, allowed)
	if got > allowed {
		t.Errorf("the origin saw %d HEADs of tags for one member's 200 resolves, more than its quota of %d", got, allowed)
	}
	if busy == 0 {
		t.Error("the member was never answered busy")
	}
}

// A coordinator at its cap of origin fetches for peers (one member holds its only slot with a
// slow fetch) answers another node's pull busy at once, and that node fetches from the origin
// itself: its client gets the blob, with no wait on the coordinator.
func TestBusyCoordinatorSendsRequesterToOrigin(t *testing.T) {
	o := startOrigin(t)
	const repo = "test/busy"
	slow, slowDigest := randomBlob(t, 8<<20)
	pushBlob(t, o, repo, slow, slowDigest)
	origin := pacedOrigin(t, o, 256<<10) // the slow blob takes half a minute
	key, err := keys.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	co := startAgentConfig(t, agent.Config{DataDir: t.TempDir(), Registries: []string{origin}, ChunkSize: 1 << 20, PieceSize: 1 << 20,
		P2P: &p2p.Config{ListenAddrs: []string{loopback}, SwarmKey: key}, MaxCoordinatedFetches: 1})
	liar := startMember(t, key, co.Node().Addrs()...)
	b := startPeer(t, t.TempDir(), key, origin, co.Node().Addrs()...)
	waitFor(t, func() bool { return b.Node().RoutingTableSize() >= 2 }, "node B to know both others")

	// A blob whose coordinator, as B sees it, is co.
	var data []byte
	var d digest.Digest
	for range 64 {
		data, d = randomBlob(t, 32<<10)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p, self, err := b.Node().Coordinator(ctx, d)
		cancel()
		if err == nil && !self && p == co.Node().ID() {
			break
		}
		d = ""
	}
	if d == "" {
		t.Fatal("no blob among 64 is coordinated by the coordinator")
	}
	pushBlob(t, o, repo, data, d)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// Both nodes' origin is the paced proxy: the member names its host.
	if err := transfer.NewClient(liar.Host()).Pull(ctx, co.Node().ID(), strings.TrimPrefix(origin, "http://"), repo, slowDigest); err != nil {
		t.Fatalf("the member's pull of the slow blob: %v", err)
	}
	if !co.Blobs().InFlight(slowDigest) {
		t.Fatal("the coordinator is not fetching the slow blob")
	}
	body, err := getBlob(t, b.host, repo, d)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("B's pull past a busy coordinator: %v", err)
	}
	if n := served(t, co, "pull", "429"); n < 1 {
		t.Fatal("the coordinator never answered busy: B's pull did not meet the cap")
	}
	if n := o.BlobGets(d.String()); n != 1 {
		t.Fatalf("the origin saw %d GETs of B's blob, want 1 (B's own)", n)
	}
}

// served is how many peer requests of op the node answered with code.
func served(t *testing.T, nd *node, op, code string) float64 {
	t.Helper()
	mfs, err := nd.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "shoal_peer_requests_served_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["op"] == op && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
