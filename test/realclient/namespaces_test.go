package realclient

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/containerd"
)

// hostedRegistry is the hosted namespace's name in these tests (`--hosted-registry`).
const hostedRegistry = "registry.local"

// TestHostedNamespaceThroughContainerd: crane pushes an image to a stock `shoal seed` (no ns, as
// every push) under the name and tag of an image its origin has. containerd, with hosts.toml
// naming an agent as the mirror of both the origin and the hosted registry, pulls the origin's
// image by the origin's name and the pushed one by the hosted registry's, the second after the
// origin has stopped.
func TestHostedNamespaceThroughContainerd(t *testing.T) {
	crane := testutil.RequireProgram(t, "crane")
	testutil.RequireProgram(t, "containerd")
	testutil.RequireProgram(t, "ctr")
	f := newFixture(t)
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	seedP2P := p2pAddr(t)
	sd := testutil.StartSeed(t, bin, []string{f.origin.URL}, "--p2p-listen", seedP2P, "--hosted-registry", hostedRegistry)
	img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 2, 300<<10)
	imgTar := filepath.Join(t.TempDir(), "img.tar")
	tag, _ := name.NewTag("test/oci:v1")
	if err := tarball.WriteToFile(imgTar, tag, img); err != nil {
		t.Fatal(err)
	}
	loaded, err := tarball.ImageFromPath(imgTar, nil)
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := loaded.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.Run(ctx, crane, "push", "--insecure", imgTar, sd.Addr+"/test/oci:v1"); err != nil {
		t.Fatalf("crane push: %v\n%s", err, out)
	}

	agent := testutil.StartAgent(t, bin, []string{f.origin.URL}, "--p2p-listen", p2pAddr(t), "--bootstrap", seedP2P,
		"--hosted-registry", hostedRegistry)
	waitUntil(ctx, t, "the agent to join the seed", func() bool { return len(status(ctx, t, agent).ConnectedPeers) > 0 })
	hostsDir := writeHostsDir(t, f.origin, agent)
	// The hosted registry has no server of its own: the agent is its only host.
	hostDir := filepath.Join(hostsDir, hostedRegistry)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+hostedRegistry, agent.URL)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	pull := func(ref string) string {
		t.Helper()
		ctd := containerd.Start(t)
		if out, err := ctd.Ctr(ctx, "-n", "shoaltest", "image", "pull", "--hosts-dir", hostsDir, "--snapshotter", "native", ref); err != nil {
			t.Fatalf("ctr pull %s: %v\n%s", ref, err, out)
		}
		got, err := ctrImageDigest(ctx, ctd, ref)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := pull(f.ref("test/oci:v1")); got != f.oci.Manifest {
		t.Errorf("the origin's name gave %s, want the origin's %s (pushed %s)", got, f.oci.Manifest, pushed)
	}
	if err := f.origin.Proc.Stop(); err != nil {
		t.Logf("origin stopped: %v", err)
	}
	if got := pull(hostedRegistry + "/test/oci:v1"); got != pushed.String() {
		t.Errorf("the hosted registry's name gave %s, want the pushed %s", got, pushed)
	}
}
