// Package runtimes drives the runtimes' own pull paths through files written by the real
// `shoal configure` and checked by `shoal doctor`: containerd's CRI plugin (Debian's 1.x and
// 2.x) through crictl, as the kubelet pulls, and skopeo through the CRI-O drop-in; each pull
// goes to a real `shoal agent` process, which must prove it served it.
package runtimes

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/containerd"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

var shoal testutil.LazyBinary

func TestMain(m *testing.M) {
	code := m.Run()
	shoal.Remove()
	os.Exit(code)
}

// Containerd2Env names the containerd 2.x binary (.ci/run installs it apart from Debian's 1.x).
const Containerd2Env = "SHOAL_TEST_CONTAINERD2"

// image is a test image pushed to the origin.
type image struct {
	repo    string
	content testutil.Content
}

func pushImage(ctx context.Context, t *testing.T, origin *origins.DockerRegistry, repo string) image {
	t.Helper()
	img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 2, 256<<10)
	testutil.Push(ctx, t, origin.Addr+"/"+repo+":v1", img)
	return image{repo: repo, content: testutil.ImageContent(t, img)}
}

func (i image) digests() []string { return append([]string{i.content.Manifest}, i.content.Blobs...) }

// shoalCmd runs the shoal binary to completion and returns its output and error.
func shoalCmd(ctx context.Context, t *testing.T, args ...string) (string, error) {
	t.Helper()
	return testutil.Run(ctx, shoal.Path(t), args...)
}

// requireAliases skips the test when the agent does not take a registry alias
// (--registry docker.io=URL), which comes with its path-prefix routing (/v2/<registry
// host>/<repo>/...), the agent routing work these tests need.
func requireAliases(t *testing.T, origin string) {
	t.Helper()
	addr := testutil.FreeAddr(t)
	p := testutil.StartProcess(t, "shoal agent (alias probe)", shoal.Path(t), []string{"agent", "--listen", addr,
		"--data-dir", t.TempDir(), "--p2p=false", "--registry", "docker.io=" + origin})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := testutil.WaitHTTP(ctx, p, "http://"+addr+"/readyz", http.StatusOK)
	_ = p.Stop()
	if err != nil {
		t.Skipf("the agent in this tree has no registry aliases (--registry docker.io=URL) or path-prefix routing (/v2/<registry-host>/<repo>/...): %v\n%s",
			err, lastLines(p.Output(), 3))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// crictlImage returns the repo digests containerd's CRI plugin recorded for ref.
func crictlImage(ctx context.Context, t *testing.T, cri *containerd.CRI, ref string) []string {
	t.Helper()
	out, err := cri.Crictl(ctx, "inspecti", "-o", "json", ref)
	if err != nil {
		t.Fatalf("crictl inspecti %s: %v", ref, err)
	}
	var v struct {
		Status struct {
			RepoDigests []string `json:"repoDigests"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("crictl inspecti output: %v\n%s", err, out)
	}
	return v.Status.RepoDigests
}

func hasDigest(repoDigests []string, digest string) bool {
	for _, d := range repoDigests {
		if strings.HasSuffix(d, "@"+digest) {
			return true
		}
	}
	return false
}

// configureContainerd runs `shoal configure containerd` into a fresh config path.
func configureContainerd(ctx context.Context, t *testing.T, agent *testutil.Agent, extra ...string) string {
	t.Helper()
	certs := filepath.Join(t.TempDir(), "certs.d")
	args := append([]string{"configure", "containerd", "--config-path", certs, "--agent", agent.URL}, extra...)
	out, err := shoalCmd(ctx, t, args...)
	if err != nil {
		t.Fatalf("shoal configure containerd: %v", err)
	}
	t.Logf("shoal configure containerd:\n%s", out)
	return certs
}

// pullAndCheck pulls ref with crictl and checks that containerd recorded want and that the
// agent served every digest of img.
func pullAndCheck(ctx context.Context, t *testing.T, cri *containerd.CRI, agent *testutil.Agent, ref string, img image) {
	t.Helper()
	out, err := cri.Crictl(ctx, "pull", ref)
	if err != nil {
		t.Fatalf("crictl pull %s: %v\ncontainerd:\n%s", ref, err, lastLines(cri.Proc.Output(), 30))
	}
	t.Logf("crictl pull %s: %s", ref, strings.TrimSpace(out))
	if got := crictlImage(ctx, t, cri, ref); !hasDigest(got, img.content.Manifest) {
		t.Errorf("containerd recorded %v for %s, want the origin's %s", got, ref, img.content.Manifest)
	}
	agent.RequireServed(ctx, t, 1, len(img.content.Blobs), img.digests()...)
}
