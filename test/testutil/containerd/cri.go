package containerd

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

// CRI is a private containerd daemon with its CRI plugin, the kubelet's side of a node: its own
// root, state and sockets under a short directory in /tmp, pulls through the registry hosts
// under ConfigPath, driven with crictl. Needs root.
type CRI struct {
	Socket string
	Dir    string // root of everything the daemon writes
	Config string // its config.toml
	crictl string
	// crictlConfig is crictl's config file, naming this daemon.
	crictlConfig string
	Proc         *testutil.Process
}

// CRIOptions says which containerd to run and how its registry config is written.
type CRIOptions struct {
	// Binary is the containerd to run; "" means "containerd" on PATH (Debian's 1.x).
	Binary string
	// Version is the config version: 2 (containerd 1.x, the CRI plugin's own registry section)
	// or 3 (containerd 2.x, the images plugin's).
	Version int
	// ConfigPath is the registry config_path (hosts.toml directories); "" leaves it unset.
	ConfigPath string
	// SandboxImage is the pods' pause image (config version 2); "" leaves containerd's default,
	// which these machines cannot fetch.
	SandboxImage string
	// Pods says the test runs pods (crictl runp): runc must be installed, and every pod is
	// removed, then whatever is still mounted under Dir detached, when the test ends.
	Pods bool
}

// StartCRI starts containerd with its CRI plugin and waits until crictl reaches it. The test is
// skipped when containerd or crictl is missing, except under CI.
func StartCRI(t testing.TB, o CRIOptions) *CRI {
	t.Helper()
	bin := o.Binary
	if bin == "" {
		bin = testutil.RequireProgram(t, "containerd")
	}
	crictl := testutil.RequireProgram(t, "crictl")
	if o.Pods {
		testutil.RequireProgram(t, "runc")
	}
	if os.Geteuid() != 0 {
		if testutil.InCI() {
			t.Fatal("containerd tests need root")
		}
		t.Skip("containerd tests need root")
	}
	dir, err := os.MkdirTemp("/tmp", "shoal-cri-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // registered first, so it runs after containerd has stopped
		if o.Pods {
			unmountUnder(t, dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing containerd dir: %v", err)
		}
	})
	c := &CRI{Socket: filepath.Join(dir, "c.sock"), Dir: dir, Config: filepath.Join(dir, "config.toml"), crictl: crictl}
	common := fmt.Sprintf(`root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  level = "debug"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, c.Socket+".ttrpc")
	var config string
	switch o.Version {
	case 2:
		// restrict_oom_score_adj: these machines lack CAP_SYS_RESOURCE.
		config = "version = 2\n" + common + fmt.Sprintf(`
[plugins."io.containerd.internal.v1.opt"]
  path = %[1]q

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = %[2]q
  conf_dir = %[3]q

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "native"
`, filepath.Join(dir, "opt"), filepath.Join(dir, "cni-bin"), filepath.Join(dir, "cni-conf"))
		if o.SandboxImage != "" {
			config = strings.Replace(config, "  restrict_oom_score_adj = true\n",
				fmt.Sprintf("  restrict_oom_score_adj = true\n  sandbox_image = %q\n", o.SandboxImage), 1)
		}
		if o.ConfigPath != "" {
			config += fmt.Sprintf("\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = %q\n", o.ConfigPath)
		}
	case 3:
		config = "version = 3\n" + common + fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = [%[1]q]
  conf_dir = %[2]q

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"

[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = "linux"
  snapshotter = "native"
`, filepath.Join(dir, "cni-bin"), filepath.Join(dir, "cni-conf"))
		if o.ConfigPath != "" {
			config += fmt.Sprintf("\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = %q\n", o.ConfigPath)
		}
	default:
		t.Fatalf("config version %d: want 2 or 3", o.Version)
	}
	if err := os.WriteFile(c.Config, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// crictl's own config: the endpoints, so that it neither reads the machine's /etc/crictl.yaml
	// nor warns on stderr (mixed into the JSON the tests read) that there is none.
	endpoint := "unix://" + c.Socket
	crictlConfig := fmt.Sprintf("runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 60\n", endpoint, endpoint)
	c.crictlConfig = filepath.Join(dir, "crictl.yaml")
	if err := os.WriteFile(c.crictlConfig, []byte(crictlConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Proc = testutil.StartProcess(t, "containerd", bin, []string{"--config", c.Config})
	if o.Pods {
		t.Cleanup(func() { // runs before containerd stops: pods' shims outlive containerd otherwise
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if out, err := c.CrictlStdout(ctx, "rmp", "--all", "--force"); err != nil {
				t.Errorf("removing pods: %v\n%s", err, out)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := testutil.WaitListening(ctx, c.Proc, "unix", c.Socket); err != nil {
		t.Fatalf("containerd never listened: %v\n%s", err, c.Proc.Tail(8<<10))
	}
	// The CRI plugin's image service is up once crictl can list images.
	for {
		out, err := c.Crictl(ctx, "images")
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("crictl never reached containerd's CRI plugin: %v\n%s\n%s", err, out, c.Proc.Tail(8<<10))
		case <-time.After(100 * time.Millisecond):
		}
	}
	return c
}

// Crictl runs crictl against this containerd and returns its combined output.
func (c *CRI) Crictl(ctx context.Context, args ...string) (string, error) {
	return testutil.Run(ctx, c.crictl, append([]string{"--config", c.crictlConfig}, args...)...)
}

// CrictlStdout runs crictl against this containerd and returns its standard output alone (IDs,
// for runp and create); an error carries standard error too.
func (c *CRI) CrictlStdout(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.crictl, append([]string{"--config", c.crictlConfig}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("crictl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// WriteFile writes a file (a pod or container config for crictl) in the daemon's directory and
// returns its path.
func (c *CRI) WriteFile(t testing.TB, name, body string) string {
	t.Helper()
	p := filepath.Join(c.Dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// unmountUnder detaches whatever is still mounted below dir (a container's rootfs, a pod's
// shm), deepest first, so removing dir never reaches into a mount.
func unmountUnder(t testing.TB, dir string) {
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
