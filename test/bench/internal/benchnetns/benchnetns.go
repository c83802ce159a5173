// Package benchnetns runs a benchmark's processes over real, shaped links: each node in its own
// Linux network namespace, joined to one bridge by a veth pair whose two ends are shaped with
// tbf (each end's egress: the node's upload on its side, its download on the bridge's side).
// The bridge sits in a namespace of its own, so nothing is added to the host's namespace but
// the namespaces' names. The namespaces have one address each, on one /16, and no default
// route.
//
// Traffic sent from the host namespace to a namespace's address leaves through the host's
// default route, so the controlling program never uses those addresses: it starts every process
// inside its namespace (Command) and reaches a TCP listener in a namespace through a small
// tunnel process started there, over a Unix socket (Dial), the file system being shared.
//
// Everything is named with a prefix that belongs to one benchmark; Setup removes what a killed
// earlier run left behind under it (processes, namespaces, and with them the veths, bridge and
// qdiscs), and Close removes this run's. A lock file keeps two runs with the same prefix apart.
// It needs root, ip(8) and tc(8).
package benchnetns

import (
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

// Net is one run's switch (a bridge in its own namespace) and the namespaces joined to it.
type Net struct {
	prefix string
	dir    string // Unix sockets of the tunnels
	self   string // this program's binary, for the tunnels
	lock   *os.File

	mu    sync.Mutex
	nodes []*NS
}

// NS is one namespace on the switch.
type NS struct {
	Name string // the namespace's name (prefix + node name)
	Link string // the veth end on the bridge's side, in the switch's namespace
	IP   string // its address on the switch
	Rate int64  // both directions, bytes per second; 0: unshaped

	self   string // this program's binary (ChildCommand)
	sock   string // the tunnel's
	tunnel *exec.Cmd
}

// subnet is the switch's: node k has 10.77.(k/250).(k%250+1), /16.
const subnet = "10.77."

// Setup takes the prefix's lock, removes a previous run's leftovers (every namespace whose name
// starts with prefix, after killing the processes in it), and makes the switch. dir holds the
// tunnels' sockets (short paths: a socket path has at most 107 bytes).
func Setup(prefix, dir string) (*Net, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("network namespaces need root")
	}
	for _, t := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(t); err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), prefix+"netns.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("another run holds %s (%v): its namespaces %s* are in use", lock.Name(), err, prefix)
	}
	n := &Net{prefix: prefix, dir: dir, self: self, lock: lock}
	if left, err := n.removeAll(); err != nil {
		n.Close()
		return nil, fmt.Errorf("removing a previous run's namespaces: %w", err)
	} else if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "benchnetns: removed %d namespaces a previous run left: %s\n", len(left), strings.Join(left, " "))
	}
	sw := n.switchNS()
	if err := runAll([][]string{
		{"ip", "netns", "add", sw},
		{"ip", "-n", sw, "link", "set", "lo", "up"},
		{"ip", "-n", sw, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", sw, "link", "set", "br0", "up"},
	}); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Net) switchNS() string { return n.prefix + "sw" }

// WireRate is the rate tbf is given for a link of rate bytes/s of TCP payload: tbf counts
// whole frames, and a full-sized TCP segment on a 1500-byte MTU carries 1448 bytes of payload
// (with timestamps) in a 1514-byte frame.
func WireRate(rate int64) int64 { return rate * 1514 / 1448 }

// Burst and Limit are the tbf parameters of a link of rate bytes/s: the bucket holds 4 ms of the
// rate, at least 32 KiB (tbf drops a packet larger than its bucket, and veth hands it GSO
// packets of up to 64 KiB, which it must then split), and the queue holds 50 ms of it besides.
func Burst(rate int64) int64 { return max(32<<10, rate*4/1000) }

// Limit is the queue's size in bytes (see Burst).
func Limit(rate int64) int64 { return Burst(rate) + rate*50/1000 }

// Add makes namespace prefix+name with address number k (0..62499) on the switch, its link
// shaped to rate bytes/s of TCP payload each way (0: unshaped), and starts its tunnel. name is at most 12
// bytes (it names the bridge's veth end, and an interface name has at most 15).
func (n *Net) Add(ctx context.Context, name string, k int, rate int64) (*NS, error) {
	if len(name) > 12 || k < 0 || k >= 250*250 {
		return nil, fmt.Errorf("benchnetns: bad node %q/%d", name, k)
	}
	sw := n.switchNS()
	ns := &NS{Name: n.prefix + name, Link: "v" + name, IP: fmt.Sprintf("%s%d.%d", subnet, k/250, k%250+1), Rate: rate,
		sock: filepath.Join(n.dir, name+".sock")}
	n.mu.Lock()
	n.nodes = append(n.nodes, ns)
	n.mu.Unlock()
	cmds := [][]string{
		{"ip", "netns", "add", ns.Name},
		{"ip", "-n", ns.Name, "link", "set", "lo", "up"},
		{"ip", "-n", sw, "link", "add", ns.Link, "type", "veth", "peer", "name", "eth0", "netns", ns.Name},
		{"ip", "-n", sw, "link", "set", ns.Link, "master", "br0", "up"},
		{"ip", "-n", ns.Name, "addr", "add", ns.IP + "/16", "dev", "eth0"},
		{"ip", "-n", ns.Name, "link", "set", "eth0", "up"},
	}
	if rate > 0 {
		for _, end := range [][2]string{{ns.Name, "eth0"}, {sw, ns.Link}} {
			cmds = append(cmds, []string{"tc", "-n", end[0], "qdisc", "add", "dev", end[1], "root", "tbf",
				"rate", strconv.FormatInt(WireRate(rate)*8, 10) + "bit", "burst", strconv.FormatInt(Burst(WireRate(rate)), 10),
				"limit", strconv.FormatInt(Limit(WireRate(rate)), 10)})
		}
	}
	if err := runAll(cmds); err != nil {
		return nil, err
	}
	return ns, n.startTunnel(ctx, ns)
}

// Command is cmd run inside the namespace (`ip netns exec`, which execs it: the process ID is
// the program's), in its own process group, killed if this program dies.
func (ns *NS) Command(bin string, args ...string) *exec.Cmd {
	c := exec.Command("ip", append([]string{"netns", "exec", ns.Name, bin}, args...)...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return c
}

// Dial connects to addr (host:port as seen inside the namespace, e.g. 127.0.0.1:5000) through
// the namespace's tunnel.
func (ns *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" {
		return nil, fmt.Errorf("benchnetns: %s dials TCP only, not %s", ns.Name, network)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", ns.sock)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "%s\n", addr); err != nil {
		c.Close()
		return nil, err
	}
	// One status byte: '+' connected; anything else is followed by the error.
	var b [256]byte
	k, err := c.Read(b[:1])
	if err != nil || k != 1 || b[0] != '+' {
		m, _ := c.Read(b[1:])
		c.Close()
		return nil, fmt.Errorf("benchnetns: %s: dial %s: %s%v", ns.Name, addr, b[1:1+m], err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// HTTPClient is a client whose every connection is made inside the namespace.
func (ns *NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: ns.Dial, DisableCompression: true}}
}

// Close stops the processes in this run's namespaces (SIGKILL: whatever the benchmark did not
// stop itself) and deletes the namespaces, with their veths, bridge and qdiscs, then releases
// the lock. It is safe to call more than once, and from another goroutine (a signal's).
func (n *Net) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ns := range n.nodes {
		if ns.tunnel != nil && ns.tunnel.Process != nil {
			_ = syscall.Kill(-ns.tunnel.Process.Pid, syscall.SIGKILL)
			_ = ns.tunnel.Wait()
			ns.tunnel = nil
		}
		_ = os.Remove(ns.sock)
	}
	n.nodes = nil
	var err error
	if n.lock != nil {
		_, err = n.removeAll()
		// The file goes once the namespaces are gone: a run that makes it anew now finds
		// nothing of this one's to share.
		_ = os.Remove(n.lock.Name())
		n.lock.Close() // releases the flock
		n.lock = nil
	}
	return err
}

// removeAll kills the processes of every namespace named with the prefix and deletes those
// namespaces; it returns their names.
func (n *Net) removeAll() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var names []string
	for l := range strings.Lines(string(out)) {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], n.prefix) {
			names = append(names, f[0])
		}
	}
	var errs []error
	for _, name := range names {
		// Kill until none is left: a process may fork while we look (bounded: 20 rounds).
		for range 20 {
			pids, _ := exec.Command("ip", "netns", "pids", name).Output()
			f := strings.Fields(string(pids))
			if len(f) == 0 {
				break
			}
			for _, p := range f {
				if pid, err := strconv.Atoi(p); err == nil && pid != os.Getpid() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := run("ip", "netns", "del", name); err != nil {
			errs = append(errs, err)
		}
	}
	return names, errors.Join(errs...)
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func runAll(cmds [][]string) error {
	for _, c := range cmds {
		if err := run(c...); err != nil {
			return err
		}
	}
	return nil
}
