package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/containerd"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

// TestImageRunsAsPod builds Shoal's image with cmd/shoal-image and pushes it to Debian's
// docker-registry; containerd's CRI plugin pulls it with crictl through a `shoal agent`
// process (which must serve every byte), runs it as a host-network pod with a read-only root
// filesystem, and then pulls another image through the agent inside that pod.
func TestImageRunsAsPod(t *testing.T) {
	testutil.RequireProgram(t, "containerd")
	testutil.RequireProgram(t, "crictl")
	testutil.RequireProgram(t, "runc")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	reg := origins.StartDockerRegistry(t)

	// The image, built by the command the README names, pushed over plain HTTP.
	ref := reg.Addr + "/shoal-oci/shoal:v0.0.0-e2e"
	pushed := buildAndPush(ctx, t, ref)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("reading the pushed index: %v", err)
	}
	indexDigest, platforms := testutil.IndexContent(t, idx)
	if !strings.HasSuffix(pushed, "@"+indexDigest) {
		t.Fatalf("shoal-image said it pushed %s; the registry holds %s", pushed, indexDigest)
	}
	plat := "linux/" + runtime.GOARCH
	if runtime.GOARCH == "arm64" {
		plat += "/v8"
	}
	mine, ok := platforms[plat]
	if !ok || len(platforms) != 2 {
		t.Fatalf("pushed index has %v; want linux/amd64 and linux/arm64/v8", platforms)
	}

	pause := reg.Addr + "/test/pause:1"
	pushPause(ctx, t, pause)
	agent := testutil.StartAgent(t, shoal.Path(t), []string{reg.URL})
	certs := filepath.Join(t.TempDir(), "certs.d")
	c := containerd.StartCRI(t, containerd.CRIOptions{Version: 2, ConfigPath: certs, SandboxImage: pause, Pods: true})
	mirror(t, certs, reg.Addr, agent.Addr)

	// The kubelet's pull: index, this platform's manifest, its config and layers, all served by
	// the agent.
	if out, err := c.CrictlStdout(ctx, "pull", ref); err != nil {
		t.Fatalf("crictl pull %s: %v\n%s", ref, err, out)
	}
	agent.RequireServed(ctx, t, 2, len(mine.Blobs), append([]string{indexDigest, mine.Manifest}, mine.Blobs...)...)

	// The image as a pod: host network, read-only root, the data directory from the host (owned
	// by the image's user, 65532), its agent on a free loopback port.
	data := hostDataDir(t)
	podAddr := testutil.FreeAddr(t)
	podJSON := c.WriteFile(t, "pod.json", fmt.Sprintf(`{
  "metadata": {"name": "shoal", "namespace": "kube-system", "uid": "shoal-e2e", "attempt": 0},
  "log_directory": %q,
  "linux": {"security_context": {"namespace_options": {"network": 2}}}
}`, filepath.Join(c.Dir, "logs")))
	ctrJSON := c.WriteFile(t, "agent.json", fmt.Sprintf(`{
  "metadata": {"name": "agent"},
  "image": {"image": %q},
  "args": ["agent", "--listen", %q, "--registry", %q, "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--data-dir", "/var/lib/shoal"],
  "mounts": [{"container_path": "/var/lib/shoal", "host_path": %q}],
  "log_path": "agent.log",
  "linux": {"security_context": {"readonly_rootfs": true}}
}`, ref, podAddr, reg.URL, data))
	podID, err := c.CrictlStdout(ctx, "runp", podJSON)
	if err != nil {
		t.Fatalf("crictl runp (a host-network pod): %v", err)
	}
	ctrID, err := c.CrictlStdout(ctx, "create", podID, ctrJSON, podJSON)
	if err != nil {
		t.Fatalf("crictl create: %v", err)
	}
	if _, err := c.CrictlStdout(ctx, "start", ctrID); err != nil {
		t.Fatalf("crictl start: %v", err)
	}
	podAgent := &testutil.Agent{Addr: podAddr, URL: "http://" + podAddr, DataDir: data}
	waitReady(ctx, t, c, podAgent.URL+"/readyz")

	// A new image through the containerized agent alone.
	app := testutil.NewImage(t, testutil.OCI, testutil.Linux(runtime.GOARCH), 2, 1<<20)
	appRef := reg.Addr + "/test/app:v1"
	testutil.Push(ctx, t, appRef, app)
	appContent := testutil.ImageContent(t, app)
	mirror(t, certs, reg.Addr, podAddr)
	if out, err := c.CrictlStdout(ctx, "pull", appRef); err != nil {
		t.Fatalf("crictl pull %s through the pod: %v\n%s", appRef, err, out)
	}
	appDigests := append([]string{appContent.Manifest}, appContent.Blobs...)
	podAgent.RequireServed(ctx, t, 1, len(appContent.Blobs), appDigests...)
	if missing, _, err := agent.Committed(appDigests...); err != nil || len(missing) != len(appDigests) {
		t.Errorf("the host's agent holds some of the second image (missing %v, %v): the pull did not go through the pod alone", missing, err)
	}
	// The containerized agent wrote as the image's user.
	fi, err := os.Stat(podAgent.BlobPath(appContent.Blobs[0]))
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 65532 {
		t.Errorf("the containerized agent wrote as uid %d, want 65532 (the image's user)", uid)
	}
}

// buildAndPush runs `shoal-image --push ref` and returns what it printed: ref@digest.
func buildAndPush(ctx context.Context, t *testing.T, ref string) string {
	t.Helper()
	gobin := testutil.RequireProgram(t, "go")
	tool := filepath.Join(t.TempDir(), "shoal-image")
	if out, err := testutil.Run(ctx, gobin, "build", "-o", tool, "github.com/shoal-oci/shoal/cmd/shoal-image"); err != nil {
		t.Fatalf("building shoal-image: %v\n%s", err, out)
	}
	out, err := testutil.RunEnv(ctx, []string{"SOURCE_DATE_EPOCH=1700000000"}, tool,
		"--push", ref, "--insecure", "--version", "v0.0.0-e2e")
	if err != nil {
		t.Fatalf("shoal-image --push: %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, ref+"@sha256:") {
			return line
		}
	}
	t.Fatalf("shoal-image printed no %s@<digest>:\n%s", ref, out)
	return ""
}

// hostDataDir is a directory the image's user (65532) can write, under a path it can reach.
func hostDataDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shoal-pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, 65532, 65532); err != nil {
		t.Fatal(err)
	}
	return data
}

// waitReady polls the containerized agent's readiness, with the container's log on failure.
func waitReady(ctx context.Context, t *testing.T, c *containerd.CRI, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			ps, _ := c.CrictlStdout(context.Background(), "ps", "-a")
			logs, _ := os.ReadFile(filepath.Join(c.Dir, "logs", "agent.log"))
			t.Fatalf("the containerized agent never became ready at %s (last error %v)\n%s\n%s", url, err, ps, logs)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pushPause pushes a pause image (a static program that waits for SIGTERM) for the pods'
// sandboxes: the usual one (registry.k8s.io/pause) is out of reach.
func pushPause(ctx context.Context, t *testing.T, ref string) {
	t.Helper()
	gobin := testutil.RequireProgram(t, "go")
	src := t.TempDir()
	prog := `package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
`
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module pause\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(src, "pause")
	cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building pause: %v\n%s", err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	testutil.Push(ctx, t, ref, img)
}
