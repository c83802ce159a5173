package testutil

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Containerd is a private containerd daemon: its own root, state and sockets under a short
// directory in /tmp (unix socket paths must stay under about 100 bytes, which t.TempDir paths can
// exceed), with the CRI plugin disabled. Needs root.
type Containerd struct {
	Socket string
	ctr    string
	Proc   *Process
}

// StartContainerd starts containerd and waits for its socket to answer `ctr version`. The test is
// skipped when containerd or ctr is missing, except under CI.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	bin := RequireProgram(t, "containerd")
	ctr := RequireProgram(t, "ctr")
	if os.Geteuid() != 0 {
		if InCI() {
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
	c := &Containerd{Socket: filepath.Join(dir, "c.sock"), ctr: ctr}
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
	c.Proc = StartProcess(t, "containerd", bin, []string{"--config", cfgPath})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := WaitListening(ctx, c.Proc, "unix", c.Socket); err != nil {
		t.Fatalf("containerd never listened: %v\n%s", err, tail(c.Proc.Output(), 8<<10))
	}
	if out, err := c.Ctr(ctx, "version"); err != nil {
		t.Fatalf("ctr version: %v\n%s", err, out)
	}
	return c
}

// Ctr runs `ctr --address SOCKET args...` and returns its combined output.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	return Run(ctx, c.ctr, append([]string{"--address", c.Socket}, args...)...)
}
