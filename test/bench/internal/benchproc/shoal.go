package benchproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// P2P is how a shoal process runs peer-to-peer sharing.
type P2P int

const (
	// P2PDefault passes no peer-to-peer flag (for a binary that may have none).
	P2PDefault P2P = iota
	// P2POff turns it off: --p2p=false.
	P2POff
	// P2PLoopback listens on a free port of 127.0.0.1 (--p2p-listen), so that it meets only the
	// peers it is given with Options.Bootstrap.
	P2PLoopback
)

// Options are the choices of Start. Every process listens on a free port of 127.0.0.1.
type Options struct {
	Command    string   // the subcommand: "agent" (when empty) or "seed"
	Name       string   // names the process in messages ("agent 3"); the command when empty
	DataDir    string   // --data-dir, made if missing
	Registries []string // --registry, in order
	LogLevel   string   // --log-level; "warn" when empty
	P2P        P2P
	Bootstrap  []string // --bootstrap peers (multiaddrs with /p2p/<id>)
	PeerID     bool     // learn the peer ID before the start (`shoal id`), for others' --bootstrap
	Debug      bool     // serve Go's pprof on a free port (--debug-listen)
	Args       []string // more flags, last

	// Where the process runs, for a node in a network namespace of its own (benchnetns): Exec
	// makes the command (exec.Command when nil), Dial reaches its listeners (this process's
	// network when nil), Listen is its --listen (a free port of 127.0.0.1 when empty), and
	// P2PListen its --p2p-listen multiaddr, which P2PLoopback then uses instead of 127.0.0.1.
	Exec      func(bin string, args ...string) *exec.Cmd
	Dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	Listen    string
	P2PListen string
}

// Shoal is a `shoal agent` or `shoal seed` child process.
type Shoal struct {
	Name    string
	URL     string // its HTTP API: http://127.0.0.1:PORT
	DataDir string
	P2PAddr string // /ip4/127.0.0.1/tcp/PORT; "" without P2PLoopback
	PeerID  string // "" without Options.PeerID
	Debug   string // host:port of its pprof listener; "" without Options.Debug

	cmd     *exec.Cmd
	client  *http.Client // its API's, with Options.Dial (nil: apiClient)
	out     *Output
	done    chan struct{}
	waitErr error
	once    sync.Once
	stopErr error
}

// stopWait is how long Stop waits after SIGTERM before it kills.
const stopWait = 15 * time.Second

// Start starts bin (a shoal binary) as o says and waits until it answers /readyz. It runs in its
// own process group and the kernel kills it if this program dies (Pdeathsig); the cleanups stop
// it too.
func Start(ctx context.Context, bin string, o Options) (*Shoal, error) {
	if o.Command == "" {
		o.Command = "agent"
	}
	if o.Name == "" {
		o.Name = o.Command
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	// A port FreePort found free can be taken by another process's outgoing connection before
	// the child binds it (the ephemeral range is shared): start again on new ports, if they were
	// ours to choose.
	for attempt := 1; ; attempt++ {
		s, err := start(ctx, bin, o)
		if err == nil || attempt == 3 || o.Listen != "" || o.P2PListen != "" || !errors.Is(err, errAddrInUse) {
			return s, err
		}
	}
}

// errAddrInUse is wrapped by start's error when the child could not bind a chosen port.
var errAddrInUse = errors.New("a chosen port was taken")

func start(ctx context.Context, bin string, o Options) (*Shoal, error) {
	s := &Shoal{Name: o.Name, DataDir: o.DataDir, out: &Output{Limit: 4 << 20}, done: make(chan struct{})}
	if o.Dial != nil {
		s.client = &http.Client{Timeout: apiClient.Timeout, Transport: &http.Transport{DialContext: o.Dial}}
	}
	if o.PeerID {
		id, err := PeerID(bin, o.DataDir)
		if err != nil {
			return nil, err
		}
		s.PeerID = id
	}
	addr, err := o.Listen, error(nil)
	if addr == "" {
		if addr, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	s.URL = "http://" + addr
	args := []string{o.Command, "--listen", addr, "--data-dir", o.DataDir, "--log-level", o.LogLevel}
	for _, r := range o.Registries {
		args = append(args, "--registry", r)
	}
	switch o.P2P {
	case P2POff:
		args = append(args, "--p2p=false")
	case P2PLoopback:
		if s.P2PAddr = o.P2PListen; s.P2PAddr == "" {
			port, err := FreePort()
			if err != nil {
				return nil, err
			}
			s.P2PAddr = fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
		}
		args = append(args, "--p2p-listen", s.P2PAddr)
	}
	for _, b := range o.Bootstrap {
		args = append(args, "--bootstrap", b)
	}
	if o.Debug {
		if s.Debug, err = FreeAddr(); err != nil {
			return nil, err
		}
		args = append(args, "--debug-listen", s.Debug)
	}
	args = append(args, o.Args...)

	if o.Exec != nil {
		s.cmd = o.Exec(bin, args...)
	} else {
		s.cmd = exec.Command(bin, args...)
	}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.waitErr = s.cmd.Wait(); close(s.done) }()
	AtCleanup(func() { _ = s.Stop() })

	ready := func() bool {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, s.URL+"/readyz", nil)
		resp, err := s.api().Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	err = WaitFor(ctx, 30*time.Second, 20*time.Millisecond, s.Name+" ready", func() bool { return s.Exited() || ready() })
	switch {
	case s.Exited() && strings.Contains(s.Output(), "address already in use"):
		return nil, fmt.Errorf("%s exited before ready (%v): %w:\n%s", s, s.waitErr, errAddrInUse, s.Output())
	case s.Exited():
		return nil, fmt.Errorf("%s exited before ready (%v):\n%s", s, s.waitErr, s.Output())
	case err != nil:
		_ = s.Stop()
		return nil, fmt.Errorf("%v:\n%s", err, s.Output())
	}
	return s, nil
}

// PeerID runs `bin id --data-dir dir`, which makes the node's identity key if there is none.
func PeerID(bin, dir string) (string, error) {
	out, err := exec.Command(bin, "id", "--data-dir", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s id: %v: %s", bin, err, ee.Stderr)
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func (s *Shoal) String() string { return s.Name }

// Pid is the process's ID, for /proc readings (Status, CPUTime).
func (s *Shoal) Pid() int { return s.cmd.Process.Pid }

// Multiaddr is the full p2p address, for others' --bootstrap (needs P2PLoopback and PeerID).
func (s *Shoal) Multiaddr() string { return s.P2PAddr + "/p2p/" + s.PeerID }

// Output is what the process logged (its first 4 MiB).
func (s *Shoal) Output() string { return s.out.String() }

// Exited reports whether the process has ended.
func (s *Shoal) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// WaitErr is what waiting for the ended process returned (nil: it exited with status 0).
func (s *Shoal) WaitErr() error {
	<-s.done
	return s.waitErr
}

// Stop sends SIGTERM to the process group, then SIGKILL if it is still there after 15 s. It
// fails if the process had exited unsuccessfully, or did then, or had to be killed; the error's
// first line says which, the lines after it are the process's output.
func (s *Shoal) Stop() error {
	s.once.Do(func() {
		select {
		case <-s.done:
			s.stopErr = s.exitErr("exited by itself")
			return
		default:
		}
		_ = syscall.Kill(-s.Pid(), syscall.SIGTERM)
		select {
		case <-s.done:
			s.stopErr = s.exitErr("after SIGTERM")
		case <-time.After(stopWait):
			_ = syscall.Kill(-s.Pid(), syscall.SIGKILL)
			<-s.done
			s.stopErr = fmt.Errorf("%s did not stop within %s of SIGTERM; killed:\n%s", s, stopWait, s.Output())
		}
	})
	return s.stopErr
}

func (s *Shoal) exitErr(when string) error {
	if s.waitErr == nil {
		return nil
	}
	return fmt.Errorf("%s %s: %v:\n%s", s, when, s.waitErr, s.Output())
}
