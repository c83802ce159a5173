package realclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

// TestSkopeoCopyThroughAgent copies images with skopeo, whose registries.conf names the agent as a
// mirror of the origin. skopeo sends no ?ns=, so the agent serves them from its first --registry.
func TestSkopeoCopyThroughAgent(t *testing.T) {
	skopeo := testutil.RequireProgram(t, "skopeo")
	f := newFixture(t)
	bin := shoal.Path(t)

	amd64, arm64 := f.platforms["linux/amd64"], f.platforms["linux/arm64"]
	tests := []struct {
		name string
		src  string
		// dest is "oci" (an OCI layout, read back from index.json) or "dir" (skopeo's dir:
		// transport, which keeps the manifest byte for byte; oci: would convert a Docker
		// manifest to OCI and so change its digest).
		dest       string
		globalArgs []string // skopeo's own flags, before "copy"
		copyArgs   []string
		wantDigest string
		served     []string
		manifests  int
		blobs      int
	}{
		{
			name:       "oci image by tag",
			src:        f.ref("test/oci:v1"),
			dest:       "oci",
			wantDigest: f.oci.Manifest,
			served:     all(f.oci),
			manifests:  1,
			blobs:      blobCount(f.oci),
		},
		{
			name:       "oci image by digest",
			src:        f.ref("test/oci@" + f.oci.Manifest),
			dest:       "oci",
			wantDigest: f.oci.Manifest,
			served:     all(f.oci),
			manifests:  1,
			blobs:      blobCount(f.oci),
		},
		{
			name:       "docker image by tag",
			src:        f.ref("test/docker:v1"),
			dest:       "dir",
			wantDigest: f.docker.Manifest,
			served:     all(f.docker),
			manifests:  1,
			blobs:      blobCount(f.docker),
		},
		{
			name:       "multi-arch index picks linux/amd64",
			src:        f.ref("test/multi:v1"),
			dest:       "oci",
			globalArgs: []string{"--override-os", "linux", "--override-arch", "amd64"},
			wantDigest: amd64.Manifest,
			served:     append([]string{f.index}, all(amd64)...),
			manifests:  2,
			blobs:      blobCount(amd64),
		},
		{
			name:       "multi-arch index all platforms",
			src:        f.ref("test/multi:v1"),
			dest:       "oci",
			copyArgs:   []string{"--all"},
			wantDigest: f.index,
			served:     append([]string{f.index}, all(amd64, arm64)...),
			manifests:  3,
			blobs:      blobCount(amd64, arm64),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()

			agent := testutil.StartAgent(t, bin, []string{f.origin.URL})
			conf := writeRegistriesConf(t, f.origin, agent)

			dest := filepath.Join(t.TempDir(), "image")
			destRef := "oci:" + dest + ":v1"
			if tt.dest == "dir" {
				destRef = "dir:" + dest
			}
			args := []string{"--registries-conf", conf, "--insecure-policy", "--tmpdir", t.TempDir()}
			args = append(args, tt.globalArgs...)
			args = append(args, "copy", "--retry-times", "0")
			args = append(args, tt.copyArgs...)
			args = append(args, "docker://"+tt.src, destRef)
			// Keep any auth file lookups inside the test's directory.
			env := []string{"XDG_RUNTIME_DIR=" + t.TempDir(), "HOME=" + t.TempDir()}
			out, err := testutil.RunEnv(ctx, env, skopeo, args...)
			if err != nil {
				t.Fatalf("skopeo copy through the agent failed: %v", err)
			}
			t.Logf("skopeo copy: %s", lastLine(out))

			var got string
			if tt.dest == "dir" {
				got, err = dirManifestDigest(dest)
			} else {
				got, err = ociLayoutDigest(dest, "v1")
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.wantDigest {
				t.Errorf("skopeo wrote manifest %s for %s, want the origin's %s", got, tt.src, tt.wantDigest)
			}
			agent.RequireServed(ctx, t, tt.manifests, tt.blobs, tt.served...)
		})
	}
}

// writeRegistriesConf writes a containers-registries.conf(5) that routes the origin through the
// agent as an insecure (plain HTTP) mirror.
func writeRegistriesConf(t *testing.T, origin *origins.DockerRegistry, agent *testutil.Agent) string {
	t.Helper()
	conf := fmt.Sprintf(`unqualified-search-registries = []

[[registry]]
prefix = %[1]q
location = %[1]q
insecure = true

[[registry.mirror]]
location = %[2]q
insecure = true
`, origin.Addr, agent.Addr)
	p := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// ociLayoutDigest returns the digest of the manifest tagged tag in an OCI image layout.
func ociLayoutDigest(dir, tag string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return "", err
	}
	var idx struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return "", fmt.Errorf("parsing index.json: %w", err)
	}
	for _, m := range idx.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] == tag {
			return m.Digest, nil
		}
	}
	return "", fmt.Errorf("no manifest tagged %q in %s/index.json:\n%s", tag, dir, b)
}

// dirManifestDigest hashes the manifest that skopeo's dir: transport stored verbatim.
func dirManifestDigest(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}
