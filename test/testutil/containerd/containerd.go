// Package containerd runs private containerd daemons for the end-to-end tests: a plain one driven
// with ctr (Start) and one with its CRI plugin, the kubelet's side of a node, driven with crictl
// (StartCRI). Each lives under a short directory in /tmp and is stopped and removed when the test
// ends; they need root, and skip without it or without the programs, except under CI.
package containerd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
)

// Daemon is a private containerd daemon: its own root, state and sockets under a short
// directory in /tmp (unix socket paths must stay under about 100 bytes, which t.TempDir paths can
// exceed), with the CRI plugin disabled. Needs root.
type Daemon struct {
	Socket string
	ctr    string
	Proc   *testutil.Process
}

// Start starts containerd and waits for its socket to answer `ctr version`. The test is
// skipped when containerd or ctr is missing, except under CI.
func Start(t testing.TB) *Daemon {
	t.Helper()
	bin := testutil.RequireProgram(t, "containerd")
	ctr := testutil.RequireProgram(t, "ctr")
	if os.Geteuid() != 0 {
		if testutil.InCI() {
			t.Fatal("containerd tests need root")
		}
		t.Skip("containerd tests need root")
	}
	dir, err := os.MkdirTemp("/tmp", "shoal-ctr-")
	if err != nil {
		t.Fatal(err)
	}
	// Registered first so it runs last, after containerd has stopped.
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing containerd dir: %v", err)
		}
	})
	c := &Daemon{Socket: filepath.Join(dir, "c.sock"), ctr: ctr}
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, c.Socket+".ttrpc", filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Proc = testutil.StartProcess(t, "containerd", bin, []string{"--config", cfgPath})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testutil.WaitListening(ctx, c.Proc, "unix", c.Socket); err != nil {
		t.Fatalf("containerd never listened: %v\n%s", err, c.Proc.Tail(8<<10))
	}
	if out, err := c.Ctr(ctx, "version"); err != nil {
		t.Fatalf("ctr version: %v\n%s", err, out)
	}
	return c
}

// Ctr runs `ctr --address SOCKET args...` and returns its combined output.
func (c *Daemon) Ctr(ctx context.Context, args ...string) (string, error) {
	return testutil.Run(ctx, c.ctr, append([]string{"--address", c.Socket}, args...)...)
}
