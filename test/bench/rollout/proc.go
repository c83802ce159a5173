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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// agentProc is a `shoal agent` (or `shoal seed`) child process.
type agentProc struct {
	Index   int
	Role    string // "agent" or "seed": the subcommand
	URL     string
	DataDir string
	P2PAddr string // /ip4/127.0.0.1/tcp/PORT, "" with p2p off
	PeerID  string
	Debug   string // base URL of the pprof listener, "" without one
	cmd     *exec.Cmd
	out     *benchproc.Output
	done    chan struct{}
	waitErr error
	once    sync.Once
	stopErr error
}

// Multiaddr is the agent's full p2p address, for other agents' --bootstrap.
func (a *agentProc) Multiaddr() string { return a.P2PAddr + "/p2p/" + a.PeerID }

// agentOpts are the per-agent choices of startAgent.
type agentOpts struct {
	seed      bool // run `shoal seed` instead of `shoal agent` (same flags)
	p2p       bool
	bootstrap []string
	link      int64    // --max-upload-rate and --max-download-rate, bytes/s (0 = unlimited)
	extra     []string // more agent flags
	needID    bool     // learn the peer ID first (`shoal id`), for others' --bootstrap
	logLevel  string
	debug     bool // serve pprof on a free port (Debug)
}

// startAgent starts `bin agent` (`bin seed` with o.seed) with dataDir, pulling through registry, and waits for /readyz.
// The agent runs in its own process group and is killed by the kernel if this program dies
// (Pdeathsig); it is also stopped by the cleanups.
func startAgent(ctx context.Context, bin, registry, dataDir string, index int, o agentOpts) (*agentProc, error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	a := &agentProc{Index: index, Role: "agent", DataDir: dataDir, out: &benchproc.Output{Limit: 4 << 20}, done: make(chan struct{})}
	if o.seed {
		a.Role = "seed"
	}
	if o.needID {
		id, err := peerID(bin, dataDir)
		if err != nil {
			return nil, err
		}
		a.PeerID = id
	}
	httpPort, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	a.URL = "http://" + addr
	args := []string{a.Role, "--listen", addr, "--data-dir", dataDir, "--registry", registry, "--log-level", o.logLevel}
	if o.link > 0 {
		r := strconv.FormatInt(o.link, 10)
		args = append(args, "--max-upload-rate", r, "--max-download-rate", r)
	}
	args = append(args, o.extra...)
	if o.debug {
		dp, err := benchproc.FreePort()
		if err != nil {
			return nil, err
		}
		a.Debug = fmt.Sprintf("http://127.0.0.1:%d", dp)
		args = append(args, "--debug-listen", strings.TrimPrefix(a.Debug, "http://"))
	}
	if o.p2p {
		p2pPort, err := benchproc.FreePort()
		if err != nil {
			return nil, err
		}
		a.P2PAddr = fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p2pPort)
		args = append(args, "--p2p-listen", a.P2PAddr)
		for _, b := range o.bootstrap {
			args = append(args, "--bootstrap", b)
		}
	} else {
		args = append(args, "--p2p=false")
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
			return nil, fmt.Errorf("%s exited before ready (%v):\n%s", a, a.waitErr, a.out.String())
		case <-ctx.Done():
			_ = a.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = a.Stop()
			return nil, fmt.Errorf("%s not ready after 30s:\n%s", a, a.out.String())
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

// String names the process in messages: "agent 3", "seed".
func (a *agentProc) String() string {
	if a.Role == "seed" {
		return "seed"
	}
	return fmt.Sprintf("agent %d", a.Index)
}

// Exited reports whether the process has ended.
func (a *agentProc) Exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the agent's process group, then SIGKILL after 15s. It returns an error
// if the agent exited unsuccessfully or had to be killed.
func (a *agentProc) Stop() error {
	a.once.Do(func() {
		select {
		case <-a.done:
			a.stopErr = exitErr(a.waitErr, a, "exited by itself")
			return
		default:
		}
		_ = syscall.Kill(-a.Pid(), syscall.SIGTERM)
		select {
		case <-a.done:
			a.stopErr = exitErr(a.waitErr, a, "after SIGTERM")
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-a.Pid(), syscall.SIGKILL)
			<-a.done
			a.stopErr = fmt.Errorf("%s did not stop within 15s of SIGTERM; killed", a)
		}
	})
	return a.stopErr
}

func exitErr(err error, a *agentProc, when string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %s: %v", a, when, err)
}

// Output is what the agent logged.
func (a *agentProc) Output() string { return a.out.String() }

// status is the part of /shoal/v1/status the benchmark reads.
type status struct {
	PeerID           string   `json:"peerID"`
	ConnectedPeers   []string `json:"connectedPeers"`
	RoutingTableSize int      `json:"routingTableSize"`
	Transfers        []struct {
		Digest string `json:"digest"`
		Source string `json:"source"`
		Bytes  int64  `json:"bytes"`
		Size   int64  `json:"size"`
	} `json:"transfers"`
	Store struct {
		Bytes   int64 `json:"bytes"`
		Objects int64 `json:"objects"`
	} `json:"store"`
}

var ctlClient = &http.Client{Timeout: 10 * time.Second}

func getStatus(ctx context.Context, base string) (status, error) {
	var st status
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/shoal/v1/status", nil)
	resp, err := ctlClient.Do(req)
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

// metrics reads the agent's /metrics and returns the samples whose names are in want (a sample
// is the name with its labels, e.g. `shoal_fetched_bytes_total{source="peer"}`); absent ones are 0.
// A wanted name without labels also sums every labelled sample of that metric
// (`shoal_origin_errors_total` adds up all its registries and operations).
func metrics(ctx context.Context, base string, want ...string) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := ctlClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := make(map[string]float64, len(want))
	for _, w := range want {
		out[w] = 0
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		if _, w := out[name]; w {
			out[name] += v
		}
		if family, _, labelled := strings.Cut(name, "{"); labelled {
			if _, w := out[family]; w {
				out[family] += v
			}
		}
	}
	return out, sc.Err()
}

// machineCPU is the machine-wide CPU time from /proc/stat: busy (everything but idle and
// iowait), iowait and the total, all in clock ticks.
type machineCPU struct{ busy, iowait, total int64 }

func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return machineCPU{}
	}
	var m machineCPU
	for i, s := range f[1:] {
		if i >= 8 { // guest time is already counted in user
			break
		}
		v, _ := strconv.ParseInt(s, 10, 64)
		m.total += v
		switch i {
		case 3: // idle
		case 4:
			m.iowait += v
		default:
			m.busy += v
		}
	}
	return m
}

func (m machineCPU) sub(o machineCPU) machineCPU {
	return machineCPU{busy: m.busy - o.busy, iowait: m.iowait - o.iowait, total: m.total - o.total}
}
