package realclient

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoal-oci/shoal/test/testutil"
)

// TestTLSListener: a seed with --tls-cert and --tls-key (a certificate from a CA the test makes)
// serves /v2 and the admin endpoints over HTTPS only. The admin client reaches it with --tls-ca
// and fails the certificate check without it; crane, trusting the CA, logs in and pushes over
// HTTPS.
func TestTLSListener(t *testing.T) {
	crane := testutil.RequireProgram(t, "crane")
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("tls-s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tf := testutil.NewTLSFiles(t, "seed.test")
	sd := testutil.StartSeed(t, bin, []string{"none"}, "--tls-cert", tf.Cert, "--tls-key", tf.Key, "--admin-token-file", token)
	hc := tf.Client()
	waitUntil(ctx, t, "the seed to answer over HTTPS", func() bool {
		resp, err := hc.Get(sd.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if resp, err := http.Get("http://" + sd.Addr + "/shoal/v1/status"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("the TLS listener answers plain HTTP")
		}
	}

	out, err := testutil.Run(ctx, bin, "pin", "ls", "--seed", sd.URL, "--tls-ca", tf.CA, "--admin-token-file", token)
	if err != nil || !strings.Contains(out, "REF") {
		t.Fatalf("shoal pin ls over HTTPS with --tls-ca: %v\n%s", err, out)
	}
	if out, err := testutil.Run(ctx, bin, "pin", "ls", "--seed", sd.URL, "--admin-token-file", token); err == nil ||
		!strings.Contains(out, "certificate") {
		t.Errorf("shoal pin ls without the CA: %v\n%s", err, out)
	}

	img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 1, 200<<10)
	imgTar := filepath.Join(dir, "img.tar")
	tag, _ := name.NewTag("site/tls:v1")
	if err := tarball.WriteToFile(imgTar, tag, img); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	env := []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker"), "SSL_CERT_FILE=" + tf.CA}
	if out, err := testutil.RunEnv(ctx, env, crane, "auth", "login", "-u", "shoal", "-p", "tls-s3cret", sd.Addr); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, out)
	}
	if out, err := testutil.RunEnv(ctx, env, crane, "push", imgTar, sd.Addr+"/site/tls:v1"); err != nil {
		t.Fatalf("crane push over HTTPS: %v\n%s", err, out)
	}
	loaded, err := tarball.ImageFromPath(imgTar, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := loaded.Digest() // as pushed: a docker-archive's manifest
	got, err := testutil.RunEnv(ctx, env, crane, "digest", sd.Addr+"/site/tls:v1")
	if err != nil || strings.TrimSpace(got) != want.String() {
		t.Errorf("crane digest over HTTPS: %v %q, want %s", err, got, want)
	}
}
