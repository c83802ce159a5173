package benchnetns

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RoleEnv names the role a benchmark binary plays when it is started again inside a namespace
// (ChildCommand); unset, it is the controlling program.
const RoleEnv = "SHOAL_BENCH_NETNS_ROLE"

// Role is a child process's work: it gets the arguments after the program name, writes
// "ready" on a line of its own to stdout once it serves (if the caller waits for that), and
// returns when done.
type Role func(args []string) error

// Child plays the role RoleEnv names, if it is set, and exits: a benchmark's main calls it
// first. roles are the program's own; the package's (tunnel, tcpsink, tcpsend) are always
// there.
func Child(roles map[string]Role) {
	name := os.Getenv(RoleEnv)
	if name == "" {
		return
	}
	all := map[string]Role{"tunnel": tunnel, "tcpsink": tcpSink, "tcpsend": tcpSend}
	for k, v := range roles {
		all[k] = v
	}
	r, ok := all[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "%s=%q: no such role\n", RoleEnv, name)
		os.Exit(2)
	}
	if err := r(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// ChildCommand is this program run inside the namespace in role (see Child).
func (ns *NS) ChildCommand(role string, args ...string) *exec.Cmd {
	c := ns.Command(ns.self, args...)
	c.Env = append(os.Environ(), RoleEnv+"="+role)
	return c
}

// StartReady starts c and waits, at most limit, for its "ready" line on stdout; the rest of its
// stdout is then read from the returned reader. Its stderr goes to errOut.
func StartReady(c *exec.Cmd, errOut io.Writer, limit time.Duration) (*bufio.Reader, error) {
	out, err := c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c.Stderr = errOut
	if err := c.Start(); err != nil {
		return nil, err
	}
	rd := bufio.NewReader(out)
	got := make(chan error, 1)
	go func() {
		l, err := rd.ReadString('\n')
		if err == nil && strings.TrimSpace(l) != "ready" {
			err = fmt.Errorf("first line %q, want ready", l)
		}
		got <- err
	}()
	select {
	case err = <-got:
	case <-time.After(limit):
		err = fmt.Errorf("not ready after %s", limit)
	}
	if err != nil {
		_ = c.Process.Kill()
		_ = c.Wait()
		return nil, fmt.Errorf("%s: %w (stderr: %v)", strings.Join(c.Args, " "), err, errOut)
	}
	return rd, nil
}

func (n *Net) startTunnel(ctx context.Context, ns *NS) error {
	ns.self = n.self
	_ = os.Remove(ns.sock)
	c := ns.ChildCommand("tunnel", ns.sock)
	var stderr strings.Builder
	if _, err := StartReady(c, &Output{w: &stderr}, 10*time.Second); err != nil {
		return err
	}
	ns.tunnel = c
	return ctx.Err()
}

// tunnel serves the Unix socket args[0]: each connection names a TCP address on its first
// line; the tunnel dials it (inside its namespace), answers '+' or '-' and the error, and
// then copies both ways.
func tunnel(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: tunnel <socket>")
	}
	ln, err := net.Listen("unix", args[0])
	if err != nil {
		return err
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReaderSize(io.LimitReader(c, 256), 256).ReadString('\n')
			if err != nil {
				return
			}
			_ = c.SetReadDeadline(time.Time{})
			t, err := net.DialTimeout("tcp", strings.TrimSpace(line), 10*time.Second)
			if err != nil {
				fmt.Fprintf(c, "-%v", err)
				return
			}
			defer t.Close()
			if _, err := c.Write([]byte{'+'}); err != nil {
				return
			}
			var wg sync.WaitGroup
			wg.Go(func() { _, _ = io.Copy(t, c); _ = t.(*net.TCPConn).CloseWrite() })
			_, _ = io.Copy(c, t)
			_ = c.(*net.UnixConn).CloseWrite()
			wg.Wait()
		}()
	}
}

// The link measurement: a plain TCP transfer between two namespaces.
const measurePort = "5201"

// tcpSink listens on args[0] (an address), takes one connection, reads it to the end and prints
// the bytes and the seconds from the first byte to the last.
func tcpSink(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: tcpsink <ip>")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(args[0], measurePort))
	if err != nil {
		return err
	}
	fmt.Println("ready")
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	var n int64
	var first time.Time
	for {
		k, err := c.Read(buf)
		if k > 0 && n == 0 {
			first = time.Now()
		}
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	fmt.Println(n, time.Since(first).Seconds())
	return nil
}

// tcpSend sends args[1] bytes to args[0]:port in 1 MiB writes.
func tcpSend(args []string) error {
	fs := flag.NewFlagSet("tcpsend", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		return errors.New("usage: tcpsend <ip> <bytes>")
	}
	n, err := strconv.ParseInt(fs.Arg(1), 10, 64)
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(fs.Arg(0), measurePort), 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	for n > 0 {
		k, err := c.Write(buf[:min(n, int64(len(buf)))])
		if err != nil {
			return err
		}
		n -= int64(k)
	}
	return c.(*net.TCPConn).CloseWrite()
}

// MeasureLink sends size bytes over one plain TCP connection from one namespace to another (so
// through from's upload and to's download) and returns the rate the receiver saw, bytes/s.
func MeasureLink(ctx context.Context, from, to *NS, size int64) (float64, error) {
	var serr Output
	sink := to.ChildCommand("tcpsink", to.IP)
	rd, err := StartReady(sink, &serr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer func() { _ = sink.Process.Kill(); _ = sink.Wait() }()
	send := from.ChildCommand("tcpsend", to.IP, strconv.FormatInt(size, 10))
	if out, err := send.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("tcpsend: %v: %s", err, out)
	}
	l, err := rd.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("tcpsink: %v (stderr: %v)", err, &serr)
	}
	var n int64
	var s float64
	if _, err := fmt.Sscan(l, &n, &s); err != nil || n != size || s <= 0 {
		return 0, fmt.Errorf("tcpsink said %q, want %d bytes", l, size)
	}
	return float64(n) / s, ctx.Err()
}

// Output keeps the first 64 KiB of a child's output, written from os/exec's goroutine and read
// while the child runs; its zero value is ready.
type Output struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *Output) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		l.w = &strings.Builder{}
	}
	if l.w.Len() < 64<<10 {
		l.w.Write(p)
	}
	return len(p), nil
}

func (l *Output) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		return ""
	}
	return l.w.String()
}
