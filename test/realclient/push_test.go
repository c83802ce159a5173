package realclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoal-oci/shoal/test/testutil"
)

// TestPushWithoutOrigin: crane pushes an image, skopeo copies it, and oras pushes a non-image artifact to a
// `shoal seed --registry none` (with an admin token, as a seed beyond loopback would need);
// a `shoal agent --registry none` that joins the seed serves both byte for byte, to crane's
// library and to oras.
func TestPushWithoutOrigin(t *testing.T) {
	crane := testutil.RequireProgram(t, "crane")
	oras := testutil.RequireProgram(t, "oras")
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("push-s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seedP2P := p2pAddr(t)
	sd := testutil.StartSeed(t, bin, []string{"none"}, "--p2p-listen", seedP2P, "--admin-token-file", token)

	// The image, as a docker-archive for crane push.
	img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 2, 700<<10)
	imgTar := filepath.Join(dir, "img.tar")
	tag, _ := name.NewTag("site/app:v1")
	if err := tarball.WriteToFile(imgTar, tag, img); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home") // crane's and oras' credentials live under $HOME/.docker
	env := []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker")}
	if out, err := testutil.RunEnv(ctx, env, crane, "push", "--insecure", imgTar, sd.Addr+"/site/app:v1"); err == nil {
		t.Fatalf("crane push without credentials succeeded:\n%s", out)
	}
	if out, err := testutil.RunEnv(ctx, env, crane, "auth", "login", "--insecure", "-u", "shoal", "-p", "push-s3cret", sd.Addr); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, out)
	}
	if out, err := testutil.RunEnv(ctx, env, crane, "push", "--insecure", imgTar, sd.Addr+"/site/app:v1"); err != nil {
		t.Fatalf("crane push: %v\n%s", err, out)
	}

	// skopeo copies the same archive under another name.
	skopeo := testutil.RequireProgram(t, "skopeo")
	if out, err := testutil.RunEnv(ctx, env, skopeo, "copy", "--dest-tls-verify=false", "--dest-creds", "shoal:push-s3cret",
		"docker-archive:"+imgTar, "docker://"+sd.Addr+"/site/copied:v1"); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}

	// Pulls from the seed need no credentials, though its version check asks for them.
	anon := []string{"HOME=" + t.TempDir(), "DOCKER_CONFIG=" + t.TempDir()}
	if out, err := testutil.RunEnv(ctx, anon, skopeo, "inspect", "--tls-verify=false", "docker://"+sd.Addr+"/site/app:v1"); err != nil {
		t.Errorf("anonymous skopeo inspect at the seed: %v\n%s", err, out)
	}
	if out, err := testutil.RunEnv(ctx, anon, crane, "digest", "--insecure", sd.Addr+"/site/app:v1"); err != nil {
		t.Errorf("anonymous crane digest at the seed: %v\n%s", err, out)
	}

	// The artifact: a file with an artifact type, no image config.
	artifact := make([]byte, 300<<10)
	_, _ = rand.Read(artifact)
	if err := os.WriteFile(filepath.Join(dir, "settings.bin"), artifact, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := testutil.RunEnvDir(ctx, dir, env, oras, "push", "--plain-http", "-u", "shoal", "-p", "push-s3cret",
		"--artifact-type", "application/vnd.example.settings", sd.Addr+"/site/settings:v1", "settings.bin")
	if err != nil {
		t.Fatalf("oras push: %v\n%s", err, out)
	}

	agent := testutil.StartAgent(t, bin, []string{"none"}, "--p2p-listen", p2pAddr(t), "--bootstrap", seedP2P)
	waitUntil(ctx, t, "the agent to join the seed", func() bool { return len(status(ctx, t, agent).ConnectedPeers) > 0 })

	// The images by tag through the agent, layer by layer: crane's as built, skopeo's as the
	// seed holds it (skopeo recompresses what it copies).
	seedRef, _ := name.ParseReference(sd.Addr+"/site/copied:v1", name.Insecure)
	copied, err := remote.Image(seedRef, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("reading skopeo's copy from the seed: %v", err)
	}
	for repo, want := range map[string]v1.Image{"site/app:v1": img, "site/copied:v1": copied} {
		ref, _ := name.ParseReference(agent.Addr+"/"+repo, name.Insecure)
		var pulled map[string][]byte
		waitUntil(ctx, t, "the agent to resolve the pushed tag at the seed", func() bool {
			got, err := remote.Image(ref, remote.WithContext(ctx))
			if err != nil {
				return false
			}
			pulled = testutil.LayerBytes(t, got)
			return true
		})
		for d, b := range testutil.LayerBytes(t, want) {
			if !bytes.Equal(pulled[d], b) {
				t.Errorf("%s: layer %s pulled through the agent differs from the pushed one", repo, d)
			}
		}
	}

	// The artifact with oras through the agent.
	outDir := filepath.Join(dir, "pulled")
	if out, err := testutil.RunEnv(ctx, env, oras, "pull", "--plain-http", "-o", outDir, agent.Addr+"/site/settings:v1"); err != nil {
		t.Fatalf("oras pull through the agent: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(outDir, "settings.bin"))
	if err != nil || !bytes.Equal(got, artifact) {
		t.Fatalf("the artifact pulled through the agent differs (%v)", err)
	}
	// Pushing to the agent is refused: it hosts nothing.
	if out, err := testutil.RunEnvDir(ctx, dir, env, oras, "push", "--plain-http", agent.Addr+"/site/other:v1", "settings.bin"); err == nil ||
		!strings.Contains(strings.ToLower(out), "unsupported") {
		t.Errorf("oras push to an agent: %v\n%s", err, out)
	}
}
