package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cleanups run once, in reverse order, when main returns or a signal arrives.
var (
	cleanupMu   sync.Mutex
	cleanupFns  []func()
	cleanupDone bool
)

func atCleanup(fn func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanupFns = append(cleanupFns, fn)
}

func runCleanups() {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	if cleanupDone {
		return
	}
	cleanupDone = true
	for i := len(cleanupFns) - 1; i >= 0; i-- {
		cleanupFns[i]()
	}
}

// lockedBuffer keeps a child's output; os/exec writes to it from its own goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 { // keep the start; a runaway log must not eat memory
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// agentProc is a `shoal agent` child process.
type agentProc struct {
	URL     string
	DataDir string
	cmd     *exec.Cmd
	out     *lockedBuffer
	done    chan struct{}
	waitErr error
	once    sync.Once
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startAgent starts bin as an agent on a free port with dataDir, pulling through registries, and
// waits for /readyz. The agent runs in its own process group and is killed by the kernel if this
// program dies (Pdeathsig); it is also stopped by the cleanups.
//
// p2p is "" for an agent without peer-to-peer sharing, "off" to turn it off, or "loopback" to run
// it on a free 127.0.0.1 port with no bootstrap peers (a lone node).
func startAgent(ctx context.Context, bin string, registries []string, dataDir, p2p string, extra ...string) (*agentProc, error) {
	addr, err := freeAddr()
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
		p2pAddr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		host, port, _ := strings.Cut(p2pAddr, ":")
		args = append(args, "--p2p-listen", "/ip4/"+host+"/tcp/"+port)
	}
	args = append(args, extra...)
	a := &agentProc{URL: "http://" + addr, DataDir: dataDir, out: &lockedBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { a.waitErr = a.cmd.Wait(); close(a.done) }()
	atCleanup(func() { _ = a.Stop() })

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

// procStatus returns a field of /proc/PID/status in bytes (the kB values are KiB).
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", field, rest, err)
		}
		return v << 10, nil
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

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

// cpuTime is the user plus system CPU time the process has used (/proc/PID/stat, in clock ticks
// of 1/100 s, the value of USER_HZ on Linux).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	// After the name: state is field 3, utime field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}
