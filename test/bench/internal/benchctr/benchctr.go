// Package benchctr pulls with containerd in the benchmarks, as a node's runtime does: each node
// runs its own containerd (root, state and sockets of its own, the CRI plugin off), started by
// the caller where the node runs (e.g. inside its network namespace), with a hosts.toml that
// makes its agent the mirror of the origin; a pull is `ctr content fetch` of the image by tag,
// which resolves and downloads in the ctr process and writes every blob into containerd's
// content store, which checks its digest at commit.
package benchctr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchnetns"
	"github.com/shoal-oci/shoal/test/bench/internal/benchruntime"
)

// Command makes a command run where the node runs (benchnetns.NS.Command, or exec.Command).
type Command func(bin string, args ...string) *exec.Cmd

// Containerd is one node's containerd.
type Containerd struct {
	Dir      string // root, state, config, hosts directory and socket
	Socket   string
	HostsDir string // --hosts-dir for ctr
	command  Command
	cmd      *exec.Cmd
	out      *benchnetns.Output
	done     chan struct{}
}

// config is containerd 1.6's: everything under one directory, and the plugins a content fetch
// does not need, which would want devices or /opt, off.
const config = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
`

// Start starts containerd (/usr/bin/containerd or the first on PATH) with its files under dir,
// through command, and waits, at most 30 s, until it answers on its socket.
func Start(ctx context.Context, command Command, dir string) (*Containerd, error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, err
	}
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "c.sock"), HostsDir: filepath.Join(dir, "hosts"),
		command: command, out: &benchnetns.Output{}, done: make(chan struct{})}
	if err := os.MkdirAll(c.HostsDir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, config, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, c.Socket+".ttrpc"), 0o644); err != nil {
		return nil, err
	}
	c.cmd = command(bin, "--config", cfg, "--log-level", "warn")
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("unix", c.Socket, time.Second)
		if err == nil {
			conn.Close()
			return c, nil
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("containerd exited before it served: %s", c.out)
		case <-ctx.Done():
			c.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("containerd not serving on %s after 30 s: %s", c.Socket, c.out)
		}
	}
}

// Mirror makes mirror (a base URL, e.g. the node's agent, http://127.0.0.1:5000) the first host
// for registry (host:port) whose own base URL is server, in the hosts directory ctr is given:
// what a node's runtime is configured with to pull through Shoal.
func (c *Containerd) Mirror(registry, server, mirror string) error {
	d := filepath.Join(c.HostsDir, registry)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, mirror)
	return os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(toml), 0o644)
}

// Fetch runs `ctr content fetch` of ref (registry/repository:tag) with the hosts directory,
// through the Command given to Start, and returns its time as a pull: from just before the
// process starts to its exit. Bytes is left to the caller (ctr does not print it).
func (c *Containerd) Fetch(ctx context.Context, ref string) *benchruntime.PullResult {
	cmd := c.command("ctr", "--address", c.Socket, "content", "fetch", "--hosts-dir", c.HostsDir, ref)
	out := &benchnetns.Output{}
	cmd.Stdout, cmd.Stderr = out, out
	r := &benchruntime.PullResult{Start: time.Now()}
	err := cmd.Start()
	if err == nil {
		stop := context.AfterFunc(ctx, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		err = cmd.Wait()
		stop()
	}
	r.End = time.Now()
	if err != nil {
		r.Err = fmt.Errorf("ctr content fetch %s: %v: %.1000s", ref, err, out)
	}
	return r
}

// Stop stops containerd (SIGTERM, then SIGKILL after 10 s) and removes its files.
func (c *Containerd) Stop() error {
	var err error
	select {
	case <-c.done:
	default:
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
			err = errors.New("containerd did not stop within 10 s of SIGTERM; killed")
		}
	}
	return errors.Join(err, os.RemoveAll(c.Dir))
}
