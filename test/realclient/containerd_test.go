package realclient

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/containerd"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

// TestContainerdPullThroughAgent pulls with `ctr image pull --hosts-dir`, whose hosts.toml names
// the agent as a pull/resolve mirror of the origin. containerd tags every mirror request with
// ?ns=<origin host:port>; the agent is started with an empty decoy registry as its first (default)
// --registry and the origin second, so only an agent that routes by ns can serve these pulls.
func TestContainerdPullThroughAgent(t *testing.T) {
	testutil.RequireProgram(t, "containerd")
	testutil.RequireProgram(t, "ctr")
	f := newFixture(t)
	bin := shoal.Path(t)

	amd64, arm64 := f.platforms["linux/amd64"], f.platforms["linux/arm64"]
	tests := []struct {
		name       string
		ref        string
		pullArgs   []string
		wantDigest string   // the digest ctr must record for ref
		served     []string // every digest the agent must have committed
		manifests  int      // manifest GETs the agent must have answered 200, at least
		blobs      int      // blob GETs likewise
	}{
		{
			name:       "oci image by tag",
			ref:        f.ref("test/oci:v1"),
			wantDigest: f.oci.Manifest,
			served:     all(f.oci),
			manifests:  1,
			blobs:      blobCount(f.oci),
		},
		{
			name:       "oci image by digest",
			ref:        f.ref("test/oci@" + f.oci.Manifest),
			wantDigest: f.oci.Manifest,
			served:     all(f.oci),
			manifests:  1,
			blobs:      blobCount(f.oci),
		},
		{
			name:       "docker image by tag",
			ref:        f.ref("test/docker:v1"),
			wantDigest: f.docker.Manifest,
			served:     all(f.docker),
			manifests:  1,
			blobs:      blobCount(f.docker),
		},
		{
			name:       "multi-arch index for linux/amd64",
			ref:        f.ref("test/multi:v1"),
			pullArgs:   []string{"--platform", "linux/amd64"},
			wantDigest: f.index,
			served:     append([]string{f.index}, all(amd64)...),
			manifests:  2,
			blobs:      blobCount(amd64),
		},
		{
			name:       "multi-arch index all platforms",
			ref:        f.ref("test/multi:v1"),
			pullArgs:   []string{"--all-platforms"},
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

			decoy := newDecoy(t)
			agent := testutil.StartAgent(t, bin, []string{decoy.URL, f.origin.URL})
			ctd := containerd.Start(t)
			hostsDir := writeHostsDir(t, f.origin, agent)

			args := []string{"-n", "shoaltest", "image", "pull", "--hosts-dir", hostsDir, "--snapshotter", "native"}
			args = append(args, tt.pullArgs...)
			args = append(args, tt.ref)
			out, err := ctd.Ctr(ctx, args...)
			if err != nil {
				t.Fatalf("ctr pull through the agent failed: %v", err)
			}
			t.Logf("ctr pull: %s", lastLine(out))

			got, err := ctrImageDigest(ctx, ctd, tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.wantDigest {
				t.Errorf("ctr recorded %s for %s, want the origin's %s", got, tt.ref, tt.wantDigest)
			}
			agent.RequireServed(ctx, t, tt.manifests, tt.blobs, tt.served...)
			if hits := decoy.contentRequests(); len(hits) > 0 {
				t.Errorf("the agent asked its default registry, not the one named by ?ns=, for %v", hits)
			}
		})
	}
}

// writeHostsDir writes DIR/<origin host:port>/hosts.toml: the origin is the server and the agent
// a mirror for pull and resolve, which is how containerd is pointed at a Shoal node.
func writeHostsDir(t *testing.T, origin *origins.DockerRegistry, agent *testutil.Agent) string {
	t.Helper()
	dir := t.TempDir()
	hostDir := filepath.Join(dir, origin.Addr)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", origin.URL, agent.URL)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ctrImageDigest returns the target digest containerd recorded for ref, from `ctr image ls`
// (columns REF TYPE DIGEST SIZE PLATFORMS LABELS), after checking with `ctr image check`
// (columns REF TYPE DIGEST STATUS ...) that the content it needs for this platform is complete.
func ctrImageDigest(ctx context.Context, ctd *containerd.Daemon, ref string) (string, error) {
	out, err := ctd.Ctr(ctx, "-n", "shoaltest", "image", "ls")
	if err != nil {
		return "", err
	}
	digest := ""
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 3 && fields[0] == ref {
			digest = fields[2]
		}
	}
	if digest == "" {
		return "", fmt.Errorf("%s not in ctr image ls:\n%s", ref, out)
	}
	check, err := ctd.Ctr(ctx, "-n", "shoaltest", "image", "check")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(check, "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 4 && fields[0] == ref && fields[3] != "complete" {
			return "", fmt.Errorf("ctr image check says %s is not complete:\n%s", ref, check)
		}
	}
	return digest, nil
}

// decoy is an empty in-process registry that records which manifests and blobs it was asked for.
type decoy struct {
	URL string

	mu   sync.Mutex
	hits []string
}

func newDecoy(t *testing.T) *decoy {
	d := &decoy{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") || strings.Contains(r.URL.Path, "/blobs/") {
			d.mu.Lock()
			d.hits = append(d.hits, r.Method+" "+r.URL.Path)
			d.mu.Unlock()
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	d.URL = srv.URL
	return d
}

func (d *decoy) contentRequests() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.hits...)
}

// lastLine returns the last non-empty line of s, which for ctr pull is its summary.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
