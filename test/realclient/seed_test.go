package realclient

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/containerd"
)

// p2pAddr is a free loopback TCP multiaddr.
func p2pAddr(t *testing.T) string {
	hostPort := testutil.FreeAddr(t)
	host, port, _ := strings.Cut(hostPort, ":")
	return fmt.Sprintf("/ip4/%s/tcp/%s", host, port)
}

// TestPreheatedSeedWithOriginDown: `shoal preheat` warms a `shoal seed` process with a
// multi-platform image; the origin stops; a new `shoal agent` joins, and containerd pulls the
// image through it by tag and by digest, every byte from the seed.
func TestPreheatedSeedWithOriginDown(t *testing.T) {
	testutil.RequireProgram(t, "containerd")
	testutil.RequireProgram(t, "ctr")
	f := newFixture(t)
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	seedP2P := p2pAddr(t)
	sd := testutil.StartSeed(t, bin, []string{f.origin.URL}, "--p2p-listen", seedP2P)
	out, err := testutil.Run(ctx, bin, "preheat", "--seed", sd.Addr, "--all-platforms", f.ref("test/multi:v1"))
	if err != nil {
		t.Fatalf("shoal preheat: %v\n%s", err, out)
	}
	if !strings.Contains(out, "pinned "+f.ref("test/multi:v1")+"@"+f.index) {
		t.Fatalf("shoal preheat printed no summary naming the index:\n%s", out)
	}
	var everything []testutil.Content
	for _, c := range f.platforms {
		everything = append(everything, c)
	}
	if missing, corrupt, err := sd.Committed(all(everything...)...); err != nil || len(missing)+len(corrupt) > 0 {
		t.Fatalf("after preheat the seed misses %v, has corrupt %v (%v)", missing, corrupt, err)
	}
	// A failing preheat says why and exits non-zero.
	if out, err := testutil.Run(ctx, bin, "preheat", "--seed", sd.Addr, f.ref("test/none:v1")); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("preheat of a missing image: %v\n%s", err, out)
	}

	if err := f.origin.Proc.Stop(); err != nil {
		t.Logf("origin stopped: %v", err)
	}
	agent := testutil.StartAgent(t, bin, []string{f.origin.URL}, "--p2p-listen", p2pAddr(t), "--bootstrap", seedP2P)
	waitUntil(ctx, t, "the agent to join the seed", func() bool { return len(status(ctx, t, agent).ConnectedPeers) > 0 })
	amd64 := f.platforms["linux/amd64"]
	for _, ref := range []string{f.ref("test/multi:v1"), f.ref("test/multi@" + f.index)} {
		ctd := containerd.Start(t)
		if out, err := ctd.Ctr(ctx, "-n", "shoaltest", "image", "pull", "--hosts-dir", writeHostsDir(t, f.origin, agent),
			"--snapshotter", "native", ref); err != nil {
			t.Fatalf("ctr pull %s with the origin down: %v\n%s", ref, err, out)
		}
		got, err := ctrImageDigest(ctx, ctd, ref)
		if err != nil {
			t.Fatal(err)
		}
		if got != f.index {
			t.Fatalf("ctr recorded %s for %s, want the index %s", got, ref, f.index)
		}
	}
	if missing, corrupt, err := agent.Committed(all(amd64)...); err != nil || len(missing)+len(corrupt) > 0 {
		t.Fatalf("the agent misses %v, has corrupt %v (%v)", missing, corrupt, err)
	}
}
