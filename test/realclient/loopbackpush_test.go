package realclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/containerd"
)

// TestPushToLoopbackSeedWithoutToken: the browser rules leave registry clients alone. On a
// loopback seed without a token, where no client sends credentials, crane (its upload POST
// says application/json), skopeo (a Docker-Distribution-Api-Version header), oras and
// containerd (a POST with neither) all push.
func TestPushToLoopbackSeedWithoutToken(t *testing.T) {
	crane := testutil.RequireProgram(t, "crane")
	skopeo := testutil.RequireProgram(t, "skopeo")
	oras := testutil.RequireProgram(t, "oras")
	ctrd := containerd.Start(t)
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sd := testutil.StartSeed(t, bin, []string{"none"})
	dir := t.TempDir()
	env := []string{"HOME=" + dir, "DOCKER_CONFIG=" + filepath.Join(dir, ".docker")}

	img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 2, 200<<10)
	imgTar := filepath.Join(dir, "img.tar")
	tag, _ := name.NewTag(sd.Addr + "/site/crane:v1")
	if err := tarball.WriteToFile(imgTar, tag, img); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.RunEnv(ctx, env, crane, "push", "--insecure", imgTar, sd.Addr+"/site/crane:v1"); err != nil {
		t.Fatalf("crane push: %v\n%s", err, out)
	}
	// Each client pushes layers of its own, so that every one starts uploads.
	img2 := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 1, 100<<10)
	img2Tar := filepath.Join(dir, "img2.tar")
	if err := tarball.WriteToFile(img2Tar, tag, img2); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.RunEnv(ctx, env, skopeo, "copy", "--dest-tls-verify=false", "docker-archive:"+img2Tar,
		"docker://"+sd.Addr+"/site/skopeo:v1"); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "settings.yaml"), []byte("a: b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.RunEnvDir(ctx, dir, env, oras, "push", "--plain-http", "--artifact-type", "application/vnd.example.settings",
		sd.Addr+"/site/oras:v1", "settings.yaml"); err != nil {
		t.Fatalf("oras push: %v\n%s", err, out)
	}
	img3 := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 1, 100<<10)
	img3Tar := filepath.Join(dir, "img3.tar")
	ctrRef := sd.Addr + "/site/containerd:v1"
	ctrTag, _ := name.NewTag(ctrRef)
	if err := tarball.WriteToFile(img3Tar, ctrTag, img3); err != nil {
		t.Fatal(err)
	}
	if out, err := ctrd.Ctr(ctx, "image", "import", "--all-platforms", img3Tar); err != nil {
		t.Fatalf("ctr image import: %v\n%s", err, out)
	}
	if out, err := ctrd.Ctr(ctx, "image", "push", "--plain-http", ctrRef); err != nil {
		t.Fatalf("ctr image push: %v\n%s", err, out)
	}
	for _, repo := range []string{"site/crane:v1", "site/skopeo:v1", "site/oras:v1", "site/containerd:v1"} {
		if out, err := testutil.RunEnv(ctx, env, crane, "digest", "--insecure", sd.Addr+"/"+repo); err != nil || !strings.HasPrefix(out, "sha256:") {
			t.Errorf("%s was not pushed: %v %s", repo, err, out)
		}
	}
}
