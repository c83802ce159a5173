// Package benchlab lays out a rollout benchmark's cluster over real links (benchnetns): the
// origin in a namespace of its own, as a child process (benchorigin.RunChild) behind a link of
// the origin's bandwidth, and every node in its own namespace behind a link of B bytes/s each
// way, where its agent, its containerd and its runtime's pulls (benchruntime.RunChild, or
// `ctr content fetch` through benchctr) all run. The controlling program reaches the origin's
// counts, the agents' APIs and the runtimes only through Unix sockets, pipes and files.
package benchlab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchctr"
	"github.com/shoal-oci/shoal/test/bench/internal/benchnetns"
	"github.com/shoal-oci/shoal/test/bench/internal/benchorigin"
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
	"github.com/shoal-oci/shoal/test/bench/internal/benchruntime"
)

// Clients are the ways a node pulls.
const (
	// Runtime is the benchmark's simulated runtime (benchruntime), one process per pull.
	Runtime = "runtime"
	// Ctr is `ctr content fetch` into the node's own containerd, mirrored through its agent.
	Ctr = "ctr"
)

// Config is a lab's layout.
type Config struct {
	Prefix     string // names of the namespaces (benchnetns.Setup)
	Dir        string // the lab's files: sockets, containerd directories
	Nodes      int
	Link       int64  // B, each node's link each way, bytes/s of TCP payload
	OriginRate int64  // the origin's link, each way; 0: unshaped
	Blobs      string // the origin's blob files (benchruntime.MakeImage's directory)
	Image      *benchruntime.Image
	Client     string // Runtime or Ctr
	Parallel   int    // Runtime: blobs at a time
}

// Lab is a running layout.
type Lab struct {
	cfg    Config
	net    *benchnetns.Net
	origin *benchnetns.NS
	proc   *benchproc.Output
	remote *benchorigin.Remote
	nodes  []*benchnetns.NS
	imFile string

	mu   sync.Mutex
	last benchorigin.Counts
	ids  []string // the nodes' peer IDs

	// NodeLink and OriginLink are plain TCP transfers measured over the shaped links, bytes/s:
	// node 0 to node 1, and the origin to node 0.
	NodeLink, OriginLink float64
}

// Ports inside every namespace (each has its own).
const (
	originPort = "5000"
	agentAPI   = "127.0.0.1:5000"
	p2pPort    = "4001"
)

// Roles are the child processes a lab starts from the benchmark's own binary: pass them to
// benchnetns.Child first thing in main.
func Roles() map[string]benchnetns.Role {
	return map[string]benchnetns.Role{"origin": benchorigin.RunChild, "pull": benchruntime.RunChild}
}

// Start lays the lab out, starts the origin with the image, and measures the links. Close it.
func Start(ctx context.Context, cfg Config) (l *Lab, err error) {
	if cfg.Client != Runtime && cfg.Client != Ctr {
		return nil, fmt.Errorf("benchlab: client %q: want %s or %s", cfg.Client, Runtime, Ctr)
	}
	l = &Lab{cfg: cfg, proc: &benchproc.Output{Limit: 64 << 10}}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	if l.net, err = benchnetns.Setup(cfg.Prefix, cfg.Dir); err != nil {
		return nil, err
	}
	// From here on a signal (benchproc.Main) removes the namespaces, even before Start returns.
	benchproc.AtCleanup(func() { _ = l.Close() })
	defer func() {
		if err != nil {
			_ = l.Close()
		}
	}()
	if l.origin, err = l.net.Add(ctx, "origin", 0, cfg.OriginRate); err != nil {
		return nil, err
	}
	for i := range cfg.Nodes {
		ns, err := l.net.Add(ctx, fmt.Sprintf("n%03d", i), i+1, cfg.Link)
		if err != nil {
			return nil, err
		}
		l.nodes = append(l.nodes, ns)
	}
	l.imFile = filepath.Join(cfg.Dir, "image.json")
	if err := cfg.Image.WriteImage(l.imFile); err != nil {
		return nil, err
	}
	mf := filepath.Join(cfg.Dir, "manifest.json")
	if err := os.WriteFile(mf, cfg.Image.Manifest, 0o644); err != nil {
		return nil, err
	}
	sock := filepath.Join(cfg.Dir, "origin-counts.sock")
	c := l.origin.ChildCommand("origin", "-dir", cfg.Blobs, "-listen", l.OriginHost(), "-socket", sock, "-manifest", mf,
		"-ref", benchruntime.Repository+":"+benchruntime.Tag, "-type", benchruntime.ManifestType)
	if _, err := benchnetns.StartReady(c, l.proc, 30*time.Second); err != nil {
		return nil, err
	}
	l.remote = benchorigin.NewRemote(sock)
	if l.last, err = l.remote.Counts(); err != nil {
		return nil, err
	}
	if cfg.Nodes > 1 {
		if l.NodeLink, err = benchnetns.MeasureLink(ctx, l.nodes[0], l.nodes[1], max(3*cfg.Link, 8<<20)); err != nil {
			return nil, err
		}
	}
	// Through node 0's link too: about 3 s at the slower of the two.
	slower := cfg.Link
	if cfg.OriginRate > 0 && (slower == 0 || cfg.OriginRate < slower) {
		slower = cfg.OriginRate
	}
	if l.OriginLink, err = benchnetns.MeasureLink(ctx, l.origin, l.nodes[0], max(3*slower, 8<<20)); err != nil {
		return nil, err
	}
	return l, nil
}

// OriginHost is the origin's host:port on the switch, which the agents are given.
func (l *Lab) OriginHost() string { return l.origin.IP + ":" + originPort }

// URL is the origin's base URL on the switch.
func (l *Lab) URL() string { return "http://" + l.OriginHost() }

// Counts is what the origin has served so far (its last answer, if it does not answer now).
func (l *Lab) Counts() benchorigin.Counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, err := l.remote.Counts(); err == nil {
		l.last = c
	}
	return l.last
}

// identityFile is where a shoal data directory keeps the node's key (p2p/keys.IdentityFile).
const identityFile = "identity.key"

// AgentOptions places node i's agent in its namespace: started there, its API on 127.0.0.1 there
// (reached through the tunnel), its P2P listener on its address on the switch. A listener beyond
// loopback must admit only known peers, so every node of the lab gets an identity once (made by
// bin, `shoal id`), copied into its data directory, and every agent --allow-peer for each.
func (l *Lab) AgentOptions(bin string, i int, o *benchproc.Options) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	idDir := func(j int) string { return filepath.Join(l.cfg.Dir, "id", strconv.Itoa(j)) }
	if l.ids == nil {
		for j := range l.nodes {
			id, err := benchproc.PeerID(bin, idDir(j))
			if err != nil {
				return err
			}
			l.ids = append(l.ids, id)
		}
	}
	key, err := os.ReadFile(filepath.Join(idDir(i), identityFile))
	if err == nil {
		err = os.MkdirAll(o.DataDir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(o.DataDir, identityFile), key, 0o600)
	}
	if err != nil {
		return err
	}
	ns := l.nodes[i]
	o.Exec, o.Dial, o.Listen = ns.Command, ns.Dial, agentAPI
	o.P2PListen = "/ip4/" + ns.IP + "/tcp/" + p2pPort
	for _, id := range l.ids {
		o.Args = append(o.Args, "--allow-peer", id)
	}
	return nil
}

// A Puller is one node's client, ready: Pull pulls the image once, Close releases it.
type Puller interface {
	Pull(ctx context.Context) *benchruntime.PullResult
	Close()
}

// Client makes node i's client ready to pull through its agent (a runtime process waiting for
// the start, or a fresh containerd with its hosts.toml); received counts the runtime's bytes.
func (l *Lab) Client(ctx context.Context, i int, received *atomic.Int64) (Puller, error) {
	ns := l.nodes[i]
	if l.cfg.Client == Runtime {
		return benchruntime.StartChild(ns.ChildCommand("pull", "-base", "http://"+agentAPI, "-image", l.imFile,
			"-parallel", strconv.Itoa(l.cfg.Parallel)), received)
	}
	c, err := benchctr.Start(ctx, ns.Command, filepath.Join(l.cfg.Dir, "ctr-"+strconv.Itoa(i)))
	if err != nil {
		return nil, err
	}
	if err := c.Mirror(l.OriginHost(), "http://"+l.OriginHost(), "http://"+agentAPI); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return &ctrPuller{c: c, ref: fmt.Sprintf("%s/%s:%s", l.OriginHost(), benchruntime.Repository, benchruntime.Tag), bytes: l.cfg.Image.Bytes()}, nil
}

// Pull makes node i's client ready (Client), calls ready, waits for gate to close, and pulls;
// a client that could not be made fails the pull.
func (l *Lab) Pull(ctx context.Context, i int, received *atomic.Int64, ready func(), gate <-chan struct{}) *benchruntime.PullResult {
	p, err := l.Client(ctx, i, received)
	ready()
	<-gate
	if err != nil {
		return &benchruntime.PullResult{Start: time.Now(), End: time.Now(), Err: err}
	}
	defer p.Close()
	return p.Pull(ctx)
}

type ctrPuller struct {
	c     *benchctr.Containerd
	ref   string
	bytes int64
}

func (p *ctrPuller) Pull(ctx context.Context) *benchruntime.PullResult {
	r := p.c.Fetch(ctx, p.ref)
	if r.Err == nil {
		r.Bytes = p.bytes
	}
	return r
}

func (p *ctrPuller) Close() { _ = p.c.Stop() }

// Describe is the lab's layout for a report, in Markdown.
func (l *Lab) Describe() string {
	return fmt.Sprintf("every agent in its own network namespace, joined to one bridge (in a namespace of its own) by a veth pair shaped with tbf on the egress of both ends "+
		"(rate B·1514/1448 for TCP payload at B, burst %d bytes, queue limit %d bytes at B), no default routes; the origin (the benchmark's counting origin, "+
		"as a child process) in a namespace of its own behind a link shaped the same way to the origin bandwidth; the pulls are %s, started inside each node's namespace; "+
		"every agent has --allow-peer for each node's ID (a P2P listener beyond loopback must admit only known peers; no swarm key, whose cipher would cost CPU). "+
		"Measured with one plain TCP connection: node 0 to node 1 %.2f MB/s, the origin to node 0 %.2f MB/s",
		benchnetns.Burst(benchnetns.WireRate(l.cfg.Link)), benchnetns.Limit(benchnetns.WireRate(l.cfg.Link)), l.clientText(), l.NodeLink/1e6, l.OriginLink/1e6)
}

func (l *Lab) clientText() string {
	if l.cfg.Client == Ctr {
		return "`ctr content fetch <origin>/" + benchruntime.Repository + ":" + benchruntime.Tag + "` into a fresh containerd 1.6 per node and scenario (its own root, state and socket, CRI off), whose hosts.toml makes the node's agent the mirror"
	}
	return "the benchmark's simulated runtime (one process per node and pull)"
}

// Close stops the origin and everything else in the lab's namespaces, and removes them. Start
// registers it with benchproc.AtCleanup too; it may run twice.
func (l *Lab) Close() error {
	if l.net == nil {
		return nil
	}
	return l.net.Close()
}
