// Package benchproc holds what the benchmark programs need around their child processes: building
// the shoal binary (from the working tree or a git revision), starting and stopping `shoal agent`
// and `shoal seed` processes and reading what they report (status, metrics, committed blobs, CPU
// and heap profiles); cleanups that run once on exit or signal (Main), a bounded output buffer,
// free loopback ports, per-process memory and CPU and the machine's CPU from /proc, and a bounded
// wait.
package benchproc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cleanups run once, in reverse order, when the program returns or a signal arrives.
var (
	cleanupMu   sync.Mutex
	cleanupFns  []func()
	cleanupDone bool
)

// AtCleanup registers fn to run at RunCleanups.
func AtCleanup(fn func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanupFns = append(cleanupFns, fn)
}

// RunCleanups runs the registered cleanups, newest first, once.
func RunCleanups() {
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

// Output keeps a child's output; os/exec writes to it from its own goroutine. Past Limit bytes
// it keeps the start and drops the rest: a runaway log must not eat memory.
type Output struct {
	Limit int
	mu    sync.Mutex
	buf   bytes.Buffer
}

func (b *Output) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > b.Limit {
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *Output) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreePort returns a TCP port free on 127.0.0.1 at the time of asking.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Status reads a "kB" field of /proc/PID/status (VmHWM, VmRSS) in bytes.
func Status(pid int, field string) (int64, error) {
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

// CPUTimes returns a process's user and system CPU time, in /proc's 10 ms ticks (pid 0: this
// process, from getrusage to the microsecond).
func CPUTimes(pid int) (user, sys time.Duration, err error) {
	if pid == 0 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0, 0, err
		}
		return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), nil
	}
	p := fmt.Sprintf("/proc/%d/stat", pid)
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, 0, err
	}
	// The command name, field 2, is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("%s: %q", p, b)
	}
	// After the name: state is field 3, utime field 14, stime field 15.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("%s: %q", p, b)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return time.Duration(ut) * 10 * time.Millisecond, time.Duration(st) * 10 * time.Millisecond, nil
}

// CPUTime is CPUTimes' user plus system time.
func CPUTime(pid int) (time.Duration, error) {
	u, s, err := CPUTimes(pid)
	return u + s, err
}

// WaitFor polls cond every tick until it holds, limit passes, or ctx ends.
func WaitFor(ctx context.Context, limit, tick time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %s", what, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(tick):
		}
	}
	return nil
}

// FreeAddr is FreePort as a host:port address on 127.0.0.1.
func FreeAddr() (string, error) {
	p, err := FreePort()
	return fmt.Sprintf("127.0.0.1:%d", p), err
}
