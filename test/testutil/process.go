// Package testutil starts the real programs that Shoal's end-to-end tests drive (the shoal agent,
// an origin registry, containerd) as child processes on 127.0.0.1, and stops every one of them.
//
// Each process runs in its own process group, so stopping it also stops whatever it forked, and
// is killed by the kernel if the test binary dies first (Pdeathsig), so a test timeout leaves no
// orphan listening on a port. Every wait is bounded.
package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// StopTimeout is how long Stop waits after SIGTERM before it kills the process group.
const StopTimeout = 10 * time.Second

// InCI reports whether the tests run under CI (CI=true), where a missing program is a failure
// rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireProgram returns the path of an executable on PATH. When it is missing the test is
// skipped, or fails under CI, whose .ci/run installs every program the tests need.
func RequireProgram(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if InCI() {
		t.Fatalf("%s is required under CI=true but is not installed: %v", name, err)
	}
	t.Skipf("%s not installed (%v); install it to run this test", name, err)
	return ""
}

// FreeAddr returns "127.0.0.1:PORT" for a TCP port that was free a moment ago. Another process
// could take it before the caller binds it; on a test machine that is rare enough to accept.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("closing probe listener: %v", err)
	}
	return addr
}

// lockedBuffer collects a process's combined output; os/exec copies into it from its own goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Process is a long-running child process started by StartProcess.
type Process struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer

	stopTimeout time.Duration

	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done is closed

	stopOnce      sync.Once
	stopErr       error
	callerStopped atomic.Bool // Stop was called before cleanup; the caller owns its error
}

// ProcessOption configures StartProcess.
type ProcessOption func(*procConfig)

type procConfig struct {
	env         []string
	stopTimeout time.Duration
}

// WithEnv adds KEY=VALUE entries to the process environment (which is otherwise the test's).
func WithEnv(kv ...string) ProcessOption {
	return func(c *procConfig) { c.env = append(c.env, kv...) }
}

// WithStopTimeout replaces StopTimeout for this process.
func WithStopTimeout(d time.Duration) ProcessOption {
	return func(c *procConfig) { c.stopTimeout = d }
}

// StartProcess starts path with args in a new process group. Its stdout and stderr are kept in
// memory; if the test fails they are logged when the test ends. The process is stopped with
// SIGTERM (then SIGKILL after StopTimeout) in t.Cleanup, unless the caller stopped it first; how
// it exits then is only logged.
func StartProcess(t testing.TB, name, path string, args []string, opts ...ProcessOption) *Process {
	t.Helper()
	cfg := procConfig{stopTimeout: StopTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), cfg.env...)
	out := &lockedBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &Process{name: name, cmd: cmd, out: out, done: make(chan struct{}), stopTimeout: cfg.stopTimeout}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// Helper programs (registries, containerd) need not exit cleanly: they are not under test.
		// Callers that care, such as StartAgent, call Stop themselves and check its error.
		if err := p.stopAndReap(); err != nil && !p.callerStopped.Load() && !diedOfSIGTERM(p.waitErr) {
			t.Logf("stopping %s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("output of %s (%s):\n%s", name, strings.Join(cmd.Args, " "), tail(p.Output(), 16<<10))
		}
	})
	return p
}

// Name is the label the process was started with.
func (p *Process) Name() string { return p.name }

// Pid is the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output returns everything the process has written to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitErr is the process's exit status as returned by exec.Cmd.Wait; call it after Done is closed.
func (p *Process) ExitErr() error {
	select {
	case <-p.done:
		return p.waitErr
	default:
		return errors.New("process still running")
	}
}

// Stop sends SIGTERM to the process group and waits up to its stop timeout for the process to exit,
// then SIGKILLs the group. It returns an error if the process had to be killed or exited other
// than cleanly after SIGTERM; a process that had already exited by itself reports its status.
// Stop is idempotent; the caller of Stop owns its error, which cleanup then does not report again.
func (p *Process) Stop() error {
	p.callerStopped.Store(true)
	return p.stopAndReap()
}

func (p *Process) stopAndReap() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Process) stop() error {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		// Exited before we asked; reap any children it left in its group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if p.waitErr != nil {
			return fmt.Errorf("%s exited before it was stopped: %w", p.name, p.waitErr)
		}
		return fmt.Errorf("%s exited before it was stopped", p.name)
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	timer := time.NewTimer(p.stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		// The leader is gone; make sure nothing else in its group lingers.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if p.waitErr != nil {
			return fmt.Errorf("%s did not exit cleanly on SIGTERM: %w", p.name, p.waitErr)
		}
		return nil
	case <-timer.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM and was killed", p.name, p.stopTimeout)
	}
}

// Run runs a short-lived command to completion in its own process group and returns its combined
// output. When ctx ends the whole group is killed.
func Run(ctx context.Context, path string, args ...string) (string, error) {
	return RunEnv(ctx, nil, path, args...)
}

// RunEnv is Run with extra KEY=VALUE environment entries.
func RunEnv(ctx context.Context, env []string, path string, args ...string) (string, error) {
	return RunEnvDir(ctx, "", env, path, args...)
}

// RunEnvDir is RunEnv in the working directory dir ("" = this process's).
func RunEnvDir(ctx context.Context, dir string, env []string, path string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return out.String(), fmt.Errorf("%s %s: %w\n%s", path, strings.Join(args, " "), err, tail(out.String(), 8<<10))
	}
	return out.String(), nil
}

// diedOfSIGTERM reports whether a wait error says the process was ended by SIGTERM, which is how
// programs without a signal handler (docker-registry) stop.
func diedOfSIGTERM(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM
}

// Tail is the end of the process's output, at most n bytes, for a failure message.
func (p *Process) Tail(n int) string { return tail(p.Output(), n) }

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "[...]\n" + s[len(s)-n:]
}
