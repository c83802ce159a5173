// Command p2p benchmarks Shoal's peer-to-peer path on one machine, over 127.0.0.1, against
// baselines measured in the same run:
//
//  1. peer transfer: agent process A holds a blob (pulled through it from the origin, which is then
//     blocked); agent process B, bootstrapped to A, GETs it through its /v2 API, so that it comes
//     from A over libp2p (TLS + yamux, /shoal/content/2). Baselines: plain loopback TCP io.Copy of
//     the same file, and the same file over one raw libp2p stream between two in-process hosts;
//  2. DHT: N agents in one process (a child process of this program), bootstrapped to a few seeds;
//     for many trials (a different blob, holder and requester each time) the time from the
//     requester's GET to the first byte, its own lookup within that, and FindProviders from a
//     third node;
//  3. memory: that process's RSS and heap per agent, and the VmHWM of each of M separate agent
//     processes in one cluster.
//
// Usage, from the module root:
//
//	go run ./test/bench/p2p [-rev HEAD] [-size 1GiB] [-runs 3] [-nodes 50] [-trials 100] [-procs 20]
//	    [-pprof DIR] [-dht-trace FILE]
//
// It builds ./cmd/shoal (from the working tree, or with -rev from a git revision, which then also
// supplies the agent package of scenario 2), prints a Markdown report and writes it to
// docs/benchmarks-p2p.md, keeping the hand-written part of that file. -pprof writes CPU profiles of
// the transfer's two agents and of scenario 2's trials; -dht-trace an execution trace of the trials,
// which test/bench/p2p/traceana explains. Every process it starts is in its own process group with
// Pdeathsig set, stopped at the end or on a signal; temporary files go under -tmp (default $TMPDIR)
// and are removed. About 2.5 minutes on an idle 2-core machine (builds included), and 12 GiB of
// temporary disk.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/shoal-oci/shoal/test/bench/internal/benchblob"
	"github.com/shoal-oci/shoal/test/bench/internal/benchmeasure"
	"github.com/shoal-oci/shoal/test/bench/internal/benchorigin"
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
	"github.com/shoal-oci/shoal/test/bench/internal/benchreport"
)

type config struct {
	sizeArg   string
	size      int64
	runs      int
	nodes     int
	seeds     int
	trials    int
	dhtBlob   int64
	procs     int
	procBlob  int64
	out       string
	tmp       string
	keep      bool
	pprof     string
	dhtTrace  string
	gap       time.Duration
	rev       string // build from this git revision instead of the working tree
	scenarios map[string]bool
	args      string // the command line, for the report
}

func main() {
	var cfg config
	sizeFlag := flag.String("size", "1GiB", "scenario 1: blob size")
	flag.IntVar(&cfg.runs, "runs", 3, "scenario 1: repetitions (medians are reported)")
	flag.IntVar(&cfg.nodes, "nodes", 50, "scenario 2: agents in one process")
	flag.IntVar(&cfg.seeds, "seeds", 3, "scenario 2: bootstrap seeds among them")
	flag.IntVar(&cfg.trials, "trials", 100, "scenario 2: trials (each a different blob, holder and requester)")
	dhtBlob := flag.String("dht-blob", "1MiB", "scenario 2: blob size")
	flag.IntVar(&cfg.procs, "procs", 20, "scenario 3: separate agent processes (0 = skip)")
	procBlob := flag.String("proc-blob", "8MiB", "scenario 3: blob pulled through every agent process")
	flag.StringVar(&cfg.out, "out", "docs/benchmarks-p2p.md", "results file, relative to the module root (\"\" = don't write)")
	flag.StringVar(&cfg.tmp, "tmp", os.TempDir(), "directory for temporary data")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory")
	flag.StringVar(&cfg.pprof, "pprof", "", "write CPU profiles into this directory: of the receiving (B) and sending (A) agents of every scenario 1 run (through their --debug-listen), and of scenario 2's process during the trials")
	flag.StringVar(&cfg.dhtTrace, "dht-trace", "", "write a Go execution trace of scenario 2's trials to this file (then: go tool trace -pprof=sched FILE)")
	flag.DurationVar(&cfg.gap, "trial-gap", 0, "scenario 2: pause before each trial (lets the previous trial's commit and announcement finish)")
	flag.StringVar(&cfg.rev, "rev", "", "build the agents, and the in-process agents of scenario 2, from this git revision (e.g. HEAD) instead of the working tree, which others may be editing")
	scen := flag.String("scenarios", "transfer,dht,procs", "scenarios to run; the report is written only when all run")
	child := flag.Bool("dht-child", false, "internal: run scenario 2 in this process and print JSON")
	flag.Parse()

	parse := func(name, s string) int64 {
		v, err := humanize.ParseBytes(s)
		if err != nil || v == 0 {
			fmt.Fprintf(os.Stderr, "-%s %q: want a positive size such as 1GiB\n", name, s)
			os.Exit(2)
		}
		return int64(v)
	}
	cfg.size, cfg.sizeArg = parse("size", *sizeFlag), *sizeFlag
	cfg.dhtBlob, cfg.procBlob = parse("dht-blob", *dhtBlob), parse("proc-blob", *procBlob)
	if *child {
		err := dhtChildMain(dhtConfig{nodes: cfg.nodes, seeds: cfg.seeds, trials: cfg.trials, blobSize: cfg.dhtBlob, tmp: cfg.tmp, trace: cfg.dhtTrace, pprof: cfg.pprof, gap: cfg.gap})
		if err != nil {
			fmt.Fprintln(os.Stderr, "dht child:", err)
			os.Exit(1)
		}
		return
	}
	cfg.scenarios = map[string]bool{}
	for _, s := range strings.Split(*scen, ",") {
		switch s = strings.TrimSpace(s); s {
		case "transfer", "dht", "procs":
			cfg.scenarios[s] = true
		default:
			fmt.Fprintf(os.Stderr, "-scenarios: unknown %q (want transfer, dht, procs)\n", s)
			os.Exit(2)
		}
	}
	if cfg.procs == 0 {
		delete(cfg.scenarios, "procs")
	}
	if cfg.runs < 1 || cfg.trials < 1 || cfg.nodes < 4 || cfg.procs < 0 || cfg.procs == 1 {
		fmt.Fprintln(os.Stderr, "-runs and -trials must be at least 1, -nodes at least 4, -procs 0 or at least 2")
		os.Exit(2)
	}
	cfg.args = strings.Join(os.Args[1:], " ")
	benchproc.Main("p2p bench", func(ctx context.Context) error { return run(ctx, cfg) })
}

// logf logs the benchmark's progress.
var logf = benchproc.Logf

// env is what the scenarios share.
type env struct {
	cfg      config
	bin      string
	childExe string // the program that runs scenario 2 (-dht-child)
	tmp      string
	o        *benchorigin.Origin
	client   *http.Client
	pattern  []byte // random bytes for the write and hash floors
	prof     *benchproc.Profiler
	res      *results
}

// startAgent starts an agent with a p2p listener on 127.0.0.1 and data directory dir, pulling
// through the origin and bootstrapped to boot; with debug (and -pprof) it can be profiled.
func (e *env) startAgent(ctx context.Context, dir string, debug bool, boot ...string) (*benchproc.Shoal, error) {
	return benchproc.Start(ctx, e.bin, benchproc.Options{DataDir: dir, Registries: []string{e.o.URL()},
		P2P: benchproc.P2PLoopback, Bootstrap: boot, PeerID: true, Debug: debug && e.prof.On()})
}

func run(ctx context.Context, cfg config) error {
	m := machine{Machine: benchreport.ReadMachine()}
	root, err := benchproc.ModuleRoot()
	if err != nil {
		return err
	}
	tmp, err := benchproc.TempDir(cfg.tmp, "shoal-bench-p2p-", cfg.keep)
	if err != nil {
		return err
	}
	if cfg.dhtTrace != "" {
		if cfg.dhtTrace, err = filepath.Abs(cfg.dhtTrace); err != nil {
			return err
		}
	}
	if cfg.pprof != "" {
		if cfg.pprof, err = filepath.Abs(cfg.pprof); err != nil {
			return err
		}
		if err := os.MkdirAll(cfg.pprof, 0o755); err != nil {
			return err
		}
	}
	// The origin's blob, A's and B's copies, three floor files per run (kept until the scenario
	// ends), the DHT child's blobs and the agent processes' copies.
	need := int64(3+3*cfg.runs)*cfg.size + int64(cfg.trials)*cfg.dhtBlob*3 + int64(cfg.procs+1)*cfg.procBlob
	if err := benchproc.CheckFree(tmp, need); err != nil {
		return err
	}

	res := &results{cfg: cfg, m: m}
	e := &env{cfg: cfg, tmp: tmp, res: res, pattern: benchmeasure.Pattern(2),
		prof:   &benchproc.Profiler{Dir: cfg.pprof},
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}}
	benchproc.AtCleanup(e.client.CloseIdleConnections)

	// Build the agent (and, with -rev, this benchmark for scenario 2, whose own files and shared
	// packages come from the working tree) while writing the blobs.
	src, err := benchproc.Checkout(ctx, root, tmp, cfg.rev, "test/bench/p2p", "test/bench/internal")
	if err != nil {
		return err
	}
	if cfg.rev != "" {
		e.childExe = filepath.Join(tmp, "p2pbench")
	} else if e.childExe, err = os.Executable(); err != nil {
		return err
	}
	res.m.agentBuild = src.Desc
	logf("building the agents from %s; writing a %s blob", src.Desc, benchreport.IBytes(cfg.size))
	e.bin = filepath.Join(tmp, "shoal")
	var buildErr1, buildErr2 error
	var wg sync.WaitGroup
	wg.Go(func() { buildErr1 = src.Build(ctx, "./cmd/shoal", e.bin) })
	if cfg.rev != "" {
		wg.Go(func() { buildErr2 = src.Build(ctx, "./test/bench/p2p", e.childExe) })
	}
	originDir := filepath.Join(tmp, "origin")
	big, err := benchblob.Make(originDir, cfg.size, 1)
	var small string
	if err == nil {
		small, err = benchblob.Make(originDir, cfg.procBlob, 2)
	}
	wg.Wait()
	if err = errors.Join(err, buildErr1, buildErr2); err != nil {
		return err
	}
	t := time.Now()
	syscall.Sync()
	logf("built; blobs written and synced (sync took %s)", time.Since(t).Round(time.Millisecond))

	if e.o, err = benchorigin.Start(originDir, benchorigin.Pacing{}); err != nil {
		return err
	}
	benchproc.AtCleanup(e.o.Close)
	if err := e.checkP2P(ctx, filepath.Join(tmp, "probe")); err != nil {
		return err
	}

	if cfg.scenarios["transfer"] {
		if err := e.transfer(ctx, big); err != nil {
			return err
		}
	}
	if cfg.scenarios["dht"] {
		logf("dht: %d agents in a child process, %d trials", cfg.nodes, cfg.trials)
		if res.dht, err = e.runDHTChild(ctx); err != nil {
			return err
		}
	}
	if cfg.scenarios["procs"] {
		e.o.Block(false)
		if err := e.procs(ctx, small); err != nil {
			return err
		}
	}

	if !cfg.scenarios["transfer"] || !cfg.scenarios["dht"] || !cfg.scenarios["procs"] {
		logf("not all scenarios ran: no report")
		return nil
	}
	res.m.Finish()
	res.tr.profiles = e.prof.Written
	report := res.markdown()
	fmt.Print(report)
	if cfg.out != "" {
		p, err := benchreport.WriteFile(root, cfg.out, report, analysisMarker)
		if err != nil {
			return err
		}
		logf("wrote %s", p)
	}
	return nil
}

// checkP2P starts `shoal agent` with a p2p listen address and checks that it runs a p2p node
// (its status shows a peer ID): before 5bb85f8, cmd/shoal accepted --p2p-listen and --bootstrap
// but never put them into agent.Config, and no peer transfer could be measured.
func (e *env) checkP2P(ctx context.Context, dir string) error {
	a, err := e.startAgent(ctx, dir, false)
	if err != nil {
		return fmt.Errorf("probe of shoal agent: %w", err)
	}
	st, err := a.Status(ctx)
	stopErr := a.Stop()
	_ = os.RemoveAll(dir)
	if err = errors.Join(err, stopErr); err == nil && st.PeerID == "" {
		err = errors.New("`shoal agent --p2p-listen ...` starts no p2p node at this revision (no peerID in /shoal/v1/status)")
	}
	return err
}
