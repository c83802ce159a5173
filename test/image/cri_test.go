package image

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
)

// cri is a private containerd with its CRI plugin (own root, state and socket under /tmp), driven
// by crictl. Registry hosts are configured by hosts.toml files under ConfigPath, which containerd
// reads at each pull.
type cri struct {
	dir        string
	ConfigPath string // the CRI registry config_path (certs.d)
	crictl     string
	crictlConf string
}

// startCRI starts containerd with the CRI plugin and sandboxImage as the pods' pause image, and
// removes every pod it ran, then its mounts, when the test ends. Needs root.
func startCRI(t *testing.T, sandboxImage string) *cri {
	t.Helper()
	bin := testutil.RequireProgram(t, "containerd")
	crictl := testutil.RequireProgram(t, "crictl")
	testutil.RequireProgram(t, "runc")
	if os.Geteuid() != 0 {
		if testutil.InCI() {
			t.Fatal("CRI tests need root")
		}
		t.Skip("CRI tests need root")
	}
	dir, err := os.MkdirTemp("/tmp", "shoal-cri-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // registered first, so it runs after containerd has stopped
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing the containerd dir: %v", err)
		}
	})
	c := &cri{dir: dir, ConfigPath: filepath.Join(dir, "certs.d"), crictl: crictl, crictlConf: filepath.Join(dir, "crictl.yaml")}
	sock := filepath.Join(dir, "c.sock")
	// restrict_oom_score_adj: these machines lack CAP_SYS_RESOURCE, without which runc cannot
	// start a container whose OOM score the CRI plugin would lower.
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  sandbox_image = %[6]q

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = %[7]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"),
		sandboxImage, c.ConfigPath)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	crictlConf := fmt.Sprintf("runtime-endpoint: unix://%[1]s\nimage-endpoint: unix://%[1]s\ntimeout: 120\n", sock)
	if err := os.WriteFile(c.crictlConf, []byte(crictlConf), 0o644); err != nil {
		t.Fatal(err)
	}
	proc := testutil.StartProcess(t, "containerd", bin, []string{"--config", cfgPath})
	t.Cleanup(func() { // runs before containerd stops: pods' shims outlive containerd otherwise
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := c.Run(ctx, "rmp", "--all", "--force"); err != nil {
			t.Errorf("removing pods: %v\n%s", err, out)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testutil.WaitListening(ctx, proc, "unix", sock); err != nil {
		t.Fatalf("containerd never listened: %v\n%s", err, proc.Output())
	}
	if out, err := c.Run(ctx, "version"); err != nil {
		t.Fatalf("crictl version: %v\n%s", err, out)
	}
	return c
}

// Run runs crictl against this containerd and returns its standard output (IDs, for runp and
// create); an error carries standard error too.
func (c *cri) Run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.crictl, append([]string{"--config", c.crictlConf}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("crictl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Mirror makes containerd pull images of registry (host:port, plain HTTP) from mirror first
// (host:port), as `shoal configure containerd` does. The file applies to the next pull.
func (c *cri) Mirror(t *testing.T, registry, mirror string) {
	t.Helper()
	hosts := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", registry, mirror)
	dir := filepath.Join(c.ConfigPath, registry)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "hosts.toml.tmp")
	if err := os.WriteFile(tmp, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "hosts.toml")); err != nil {
		t.Fatal(err)
	}
}

// WriteJSON writes a pod or container config for crictl.
func (c *cri) WriteJSON(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// unmountUnder detaches whatever is still mounted below dir (a container's rootfs, a pod's
// shm), deepest first, so removing dir never reaches into a mount.
func unmountUnder(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Errorf("reading mounts: %v", err)
		return
	}
	defer func() { _ = f.Close() }()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && strings.HasPrefix(fields[1], dir+"/") {
			points = append(points, fields[1])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", p, err)
		}
	}
}
