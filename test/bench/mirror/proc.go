package main

import (
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"

	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// agentProc is a `shoal agent` child process.
type agentProc struct {
	URL     string
	DataDir string
	cmd     *exec.Cmd
	out     *benchproc.Output
	done    chan struct{}
	waitErr error
	once    sync.Once
}

// startAgent starts bin as an agent on a free port with dataDir, pulling through registries, and
// waits for /readyz. The agent runs in its own process group and is killed by the kernel if this
// program dies (Pdeathsig); it is also stopped by the cleanups.
//
// p2p is "" for an agent without peer-to-peer sharing, "off" to turn it off, or "loopback" to run
// it on a free 127.0.0.1 port with no bootstrap peers (a lone node).
func startAgent(ctx context.Context, bin string, registries []string, dataDir, p2p string, extra ...string) (*agentProc, error) {
	addr, err := benchproc.FreeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"agent", "--listen", addr, "--data-dir", dataDir, "--log-level", "warn"}
	for _, r := range registries {
		args = append(args, "--registry", r)
	}
	switch p2p {
	case "off":
		args = append(args, "--p2p=false")
	case "loopback":
		p2pAddr, err := benchproc.FreeAddr()
		if err != nil {
			return nil, err
		}
		host, port, _ := strings.Cut(p2pAddr, ":")
		args = append(args, "--p2p-listen", "/ip4/"+host+"/tcp/"+port)
	}
	args = append(args, extra...)
	a := &agentProc{URL: "http://" + addr, DataDir: dataDir, out: &benchproc.Output{Limit: 1 << 20}, done: make(chan struct{})}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { a.waitErr = a.cmd.Wait(); close(a.done) }()
	benchproc.AtCleanup(func() { _ = a.Stop() })

	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return a, nil
			}
		}
		select {
		case <-a.done:
			return nil, fmt.Errorf("agent exited before ready (%v):\n%s", a.waitErr, a.out.String())
		case <-ctx.Done():
			_ = a.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = a.Stop()
			return nil, fmt.Errorf("agent not ready after 30s:\n%s", a.out.String())
		}
	}
}

func (a *agentProc) Pid() int { return a.cmd.Process.Pid }

// Stop sends SIGTERM to the agent's process group, then SIGKILL after 10s.
func (a *agentProc) Stop() error {
	a.once.Do(func() {
		select {
		case <-a.done:
			return
		default:
		}
		_ = syscall.Kill(-a.Pid(), syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-a.Pid(), syscall.SIGKILL)
			<-a.done
		}
	})
	var ee *exec.ExitError
	if a.waitErr != nil && !errors.As(a.waitErr, &ee) {
		return a.waitErr
	}
	if ee != nil && !ee.Success() {
		return fmt.Errorf("agent exited with %v:\n%s", ee, a.out.String())
	}
	return nil
}

// Output is what the agent logged.
func (a *agentProc) Output() string { return a.out.String() }

// committedPath is where the agent's store keeps a committed blob (agent/store's layout).
func committedPath(dataDir, d string) string {
	alg, hex, _ := strings.Cut(d, ":")
	return filepath.Join(dataDir, "blobs", alg, hex)
}

// waitCommitted waits until the agent has committed blob d (verified, fsynced, renamed).
func waitCommitted(ctx context.Context, dataDir, d string, size int64) (time.Duration, error) {
	start := time.Now()
	p := committedPath(dataDir, d)
	for {
		if fi, err := os.Stat(p); err == nil && fi.Size() == size {
			return time.Since(start), nil
		}
		if time.Since(start) > 2*time.Minute {
			return 0, fmt.Errorf("blob %s not committed at %s after 2 minutes", d, p)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
