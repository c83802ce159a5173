package realclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-oci/shoal/test/testutil"
)

// TestExportImportBetweenSeeds moves a multi-platform image into an air-gapped site: `shoal
// preheat` fills a seed from the origin, `shoal export --ns <origin>` writes an oci-archive from it, and
// `shoal import` loads the archive into a seed of another cluster that has no origin and takes a
// token; the image keeps its digest there and an agent of that cluster serves it.
func TestExportImportBetweenSeeds(t *testing.T) {
	f := newFixture(t)
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	outside := testutil.StartSeed(t, bin, []string{f.origin.URL}, "--p2p-listen", p2pAddr(t))
	if out, err := testutil.Run(ctx, bin, "preheat", "--seed", outside.Addr, "--all-platforms", f.ref("test/multi:v1")); err != nil {
		t.Fatalf("preheat: %v\n%s", err, out)
	}
	archive := filepath.Join(t.TempDir(), "multi.tar")
	// Without --ns a seed answers from its hosted repositories, where nothing is pushed: the
	// upstream image is named by its registry, as containerd names it to a mirror.
	if out, err := testutil.Run(ctx, bin, "export", "--seed", outside.Addr, "test/multi:v1", archive); err == nil {
		t.Fatalf("export of an upstream image from the seed's hosted namespace succeeded:\n%s", out)
	}
	if out, err := testutil.Run(ctx, bin, "export", "--seed", outside.Addr, "--ns", f.origin.Addr, "--format", "oci-archive", "test/multi:v1", archive); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}

	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("inside-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	insideP2P := p2pAddr(t)
	inside := testutil.StartSeed(t, bin, []string{"none"}, "--p2p-listen", insideP2P, "--admin-token-file", token)
	if out, err := testutil.Run(ctx, bin, "import", "--seed", inside.Addr, archive); err == nil {
		t.Fatalf("import without the token succeeded:\n%s", out)
	}
	out, err := testutil.Run(ctx, bin, "import", "--seed", inside.Addr, "--admin-token-file", token, "--repo", "site/multi", archive)
	if err != nil || !strings.Contains(out, "imported site/multi:v1@"+f.index) {
		t.Fatalf("import: %v\n%s", err, out)
	}
	agent := testutil.StartAgent(t, bin, []string{"none"}, "--p2p-listen", p2pAddr(t), "--bootstrap", insideP2P)
	ref, _ := name.ParseReference(agent.Addr+"/site/multi:v1", name.Insecure)
	waitUntil(ctx, t, "the agent to serve the imported index", func() bool {
		desc, err := remote.Get(ref, remote.WithContext(ctx))
		return err == nil && desc.Digest.String() == f.index
	})
	amd64 := f.platforms["linux/amd64"]
	byDigest, _ := name.ParseReference(agent.Addr+"/site/multi@"+amd64.Manifest, name.Insecure)
	img, err := remote.Image(byDigest, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("pulling the imported amd64 image through the agent: %v", err)
	}
	got := testutil.LayerBytes(t, img)
	if len(got) != len(amd64.Blobs)-1 {
		t.Fatalf("pulled %d layers, want %d", len(got), len(amd64.Blobs)-1)
	}
}
