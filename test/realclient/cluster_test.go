package realclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/containerd"
)

// TestContainerdThroughCluster runs three shoal processes on 127.0.0.1 that find each other with
// --bootstrap (node 2 by address alone, its peer ID learned; node 3 by full multiaddr): node 1
// a `shoal seed` that the others' --seed-authority authorizes, nodes 2 and 3 agents.
// containerd pulls an image through node 1, then, with the origin stopped, through node 2 with a
// fresh containerd: the tag resolves from the seed's last resolution (a tag's digest is taken
// from no plain peer) and every byte comes from node 1.
func TestContainerdThroughCluster(t *testing.T) {
	testutil.RequireProgram(t, "containerd")
	testutil.RequireProgram(t, "ctr")
	f := newFixture(t)
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	p2pAddr := func() string {
		hostPort := testutil.FreeAddr(t)
		host, port, _ := strings.Cut(hostPort, ":")
		return fmt.Sprintf("/ip4/%s/tcp/%s", host, port)
	}
	listen1 := p2pAddr()
	node1 := testutil.StartSeed(t, bin, []string{f.origin.URL}, "--p2p-listen", listen1)
	id1 := status(ctx, t, node1).PeerID
	node2 := testutil.StartAgent(t, bin, []string{f.origin.URL}, "--p2p-listen", p2pAddr(), "--bootstrap", listen1)
	node3 := testutil.StartAgent(t, bin, []string{f.origin.URL}, "--p2p-listen", p2pAddr(), "--bootstrap", listen1+"/p2p/"+id1)
	for _, n := range []*testutil.Agent{node2, node3} {
		waitUntil(ctx, t, "the node to join the cluster", func() bool { return len(status(ctx, t, n).ConnectedPeers) > 0 })
	}

	ref := f.ref("test/oci:v1")
	pull := func(agent *testutil.Agent) {
		t.Helper()
		ctd := containerd.Start(t)
		_, err := ctd.Ctr(ctx, "-n", "shoaltest", "image", "pull", "--hosts-dir", writeHostsDir(t, f.origin, agent), "--snapshotter", "native", ref)
		if err != nil {
			t.Fatalf("ctr pull through %s: %v", agent.Addr, err)
		}
		got, err := ctrImageDigest(ctx, ctd, ref)
		if err != nil {
			t.Fatal(err)
		}
		if got != f.oci.Manifest {
			t.Fatalf("ctr recorded %s, want the origin's %s", got, f.oci.Manifest)
		}
		agent.RequireServed(ctx, t, 1, blobCount(f.oci), all(f.oci)...)
	}
	pull(node1)

	if err := f.origin.Proc.Stop(); err != nil {
		t.Logf("origin stopped: %v", err)
	}
	// Node 2 may have fetched a blob from the origin for the cluster during node 1's pull (as that
	// blob's coordinator): only what it fetched for its own pull counts.
	fetched := func() (peers, origin float64) {
		samples, err := node2.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		peers, _ = testutil.Sum(samples, "shoal_fetched_bytes_total", map[string]string{"source": "peer"})
		origin, _ = testutil.Sum(samples, "shoal_fetched_bytes_total", map[string]string{"source": "origin"})
		return peers, origin
	}
	// Node 1's content is advertised within moments: node 2 takes the manifest from a peer once
	// it is, since the origin is gone. HEAD of the blobs through node 2 then answers from the
	// sizes that manifest lists; a peer's claim is never an answer.
	waitUntil(ctx, t, "node 2 to find the manifest", func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, node2.URL+"/v2/test/oci/manifests/"+f.oci.Manifest+"?ns="+f.origin.Addr, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	for _, d := range f.oci.Blobs {
		resp, err := http.Head(node2.URL + "/v2/test/oci/blobs/" + d + "?ns=" + f.origin.Addr)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 {
			t.Fatalf("HEAD of %s through node 2 with the origin down: %d, length %d", d, resp.StatusCode, resp.ContentLength)
		}
	}
	peers0, origin0 := fetched()
	pull(node2)
	peers1, origin1 := fetched()
	if origin1 != origin0 || (peers1 == peers0 && origin0 == 0) {
		t.Fatalf("node 2's pull fetched %v bytes from peers and %v from the origin, want none from the origin", peers1-peers0, origin1-origin0)
	}
}

type agentStatus struct {
	PeerID         string   `json:"peerID"`
	ConnectedPeers []string `json:"connectedPeers"`
}

func status(ctx context.Context, t *testing.T, a *testutil.Agent) agentStatus {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+"/shoal/v1/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s agentStatus
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || s.PeerID == "" {
		t.Fatalf("status of %s: %v (%+v)", a.Addr, err, s)
	}
	return s
}

func waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
