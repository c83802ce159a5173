package main

import (
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"

	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// agentProc is an agent child process with a p2p listener.
type agentProc struct {
	URL     string
	DataDir string
	P2PAddr string // /ip4/127.0.0.1/tcp/PORT
	PeerID  string
	Debug   string // base URL of the pprof listener, "" without one
	cmd     *exec.Cmd
	out     *benchproc.Output
	done    chan struct{}
	waitErr error
	once    sync.Once
}

// Multiaddr is the agent's full p2p address, for other agents' --bootstrap.
func (a *agentProc) Multiaddr() string { return a.P2PAddr + "/p2p/" + a.PeerID }

// agentOpts are the per-agent choices of startAgent.
type agentOpts struct {
	bootstrap []string
	debug     bool // serve pprof (benchagent only)
}

// startAgent starts bin as an agent with dataDir, pulling through registries, with a p2p
// listener on a free loopback port, and waits for /readyz. The agent runs in its own process
// group and is killed by the kernel if this program dies (Pdeathsig); it is also stopped by the
// cleanups.
func startAgent(ctx context.Context, bin string, registries []string, dataDir string, o agentOpts) (*agentProc, error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	id, err := peerID(bin, dataDir)
	if err != nil {
		return nil, err
	}
	httpPort, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	p2pPort, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	a := &agentProc{URL: "http://" + addr, DataDir: dataDir, PeerID: id,
		P2PAddr: fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p2pPort), out: &benchproc.Output{Limit: 1 << 20}, done: make(chan struct{})}
	args := []string{"agent", "--listen", addr, "--data-dir", dataDir, "--log-level", "warn", "--p2p-listen", a.P2PAddr}
	for _, r := range registries {
		args = append(args, "--registry", r)
	}
	for _, b := range o.bootstrap {
		args = append(args, "--bootstrap", b)
	}
	if o.debug {
		dp, err := benchproc.FreePort()
		if err != nil {
			return nil, err
		}
		a.Debug = fmt.Sprintf("http://127.0.0.1:%d", dp)
		args = append(args, "--debug-listen", strings.TrimPrefix(a.Debug, "http://"))
	}
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

// peerID runs `bin id --data-dir dir`, which creates the node's identity key if needed.
func peerID(bin, dir string) (string, error) {
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

// status is the part of /shoal/v1/status the benchmark reads.
type status struct {
	PeerID           string   `json:"peerID"`
	ConnectedPeers   []string `json:"connectedPeers"`
	RoutingTableSize int      `json:"routingTableSize"`
}

func getStatus(ctx context.Context, base string) (status, error) {
	var st status
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/shoal/v1/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status: %s", resp.Status)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st)
	return st, err
}

// metric reads one sample of the agent's /metrics, e.g. `shoal_fetched_bytes_total{source="peer"}`;
// an absent sample is 0.
func metric(ctx context.Context, base, sample string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, sc.Err()
}

// committedPath is where the agent's store keeps a committed blob (agent/store's layout).
func committedPath(dataDir, d string) string {
	alg, hex, _ := strings.Cut(d, ":")
	return filepath.Join(dataDir, "blobs", alg, hex)
}

// waitCommitted waits until the agent has committed blob d (verified, fsynced, renamed).
func waitCommitted(ctx context.Context, dataDir, d string, size int64, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	p := committedPath(dataDir, d)
	for {
		if fi, err := os.Stat(p); err == nil && fi.Size() == size {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("blob %s not committed at %s after %s", d, p, limit)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
