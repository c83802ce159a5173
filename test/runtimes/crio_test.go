package runtimes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

// TestSkopeoThroughCRIODropIn pulls with skopeo (containers/image, as CRI-O and podman) through
// the registries.conf.d drop-in `shoal configure crio` writes: each registry's first mirror is
// the agent with the registry as a path prefix, /v2/<registry>/<repo>/..., so one agent serves
// a local registry (its port written host_port in the path) and docker.io (through an alias, with
// Docker Hub unreachable). skopeo reads drop-ins only from /etc/containers, so the drop-in is given
// to it as its registries.conf, a format it shares; test/crio checks the drop-in merged with
// others by containers/image's own parser.
func TestSkopeoThroughCRIODropIn(t *testing.T) {
	skopeo := testutil.RequireProgram(t, "skopeo")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	origin := origins.StartDockerRegistry(t)
	requireAliases(t, origin.URL)
	local := pushImage(ctx, t, origin, "test/app")
	hub := pushImage(ctx, t, origin, "library/hubapp")
	alias := "docker.io=" + origin.URL
	agent := testutil.StartAgent(t, shoal.Path(t), []string{origin.URL, alias})

	dir := filepath.Join(t.TempDir(), "registries.conf.d")
	out, err := shoalCmd(ctx, t, "configure", "crio", "--dir", dir, "--registries-conf", filepath.Join(t.TempDir(), "none.conf"),
		"--agent", agent.URL, "--registry", origin.URL, "--registry", alias)
	if err != nil {
		t.Fatalf("shoal configure crio: %v", err)
	}
	t.Logf("shoal configure crio:\n%s", out)
	conf := filepath.Join(dir, "99-shoal.conf")

	for _, tt := range []struct {
		name string
		ref  string
		img  image
	}{
		{"local registry with a port", origin.Addr + "/" + local.repo + ":v1", local},
		{"local registry by digest", origin.Addr + "/" + local.repo + "@" + local.content.Manifest, local},
		{"docker.io through an alias", "docker.io/" + hub.repo + ":v1", hub},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "img")
			if out, err := testutil.Run(ctx, skopeo, "--registries-conf", conf, "copy", "--retry-times", "0",
				"docker://"+tt.ref, "dir:"+dest); err != nil {
				t.Fatalf("skopeo copy %s: %v\n%s", tt.ref, err, out)
			}
			m, err := os.ReadFile(filepath.Join(dest, "manifest.json"))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(m)
			if got := "sha256:" + hex.EncodeToString(sum[:]); got != tt.img.content.Manifest {
				t.Errorf("skopeo got manifest %s, want the origin's %s", got, tt.img.content.Manifest)
			}
			agent.RequireServed(ctx, t, 1, len(tt.img.content.Blobs), tt.img.digests()...)
		})
	}
}
