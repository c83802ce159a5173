// Command rollout benchmarks a cluster-wide image rollout on one machine, over 127.0.0.1: N
// `shoal agent` processes, each with a "link" of B bytes/s (--max-upload-rate and
// --max-download-rate), an origin registry whose whole egress is paced to its bandwidth, and a
// generated image of S bytes of random layers. Scenarios:
//
//   - create: all N nodes pull the image at the same instant;
//   - update: the nodes pull in waves of 20% (a rolling DaemonSet update), each wave starting
//     when the previous one has finished;
//   - origin-only: the same N simultaneous pulls with --p2p=false: the baseline, measured in the
//     same run;
//   - create-private (only when asked for): create with the origin refusing anonymous reads (HTTP
//     Basic) and every runtime sending its node's credential (one of -private-users), the agents
//     having none of their own: what authorizing a private image costs, beside create;
//   - seeded (only when asked for): create with a `shoal seed` process (link B like an agent)
//     that the agents bootstrap from, preheated with `shoal preheat` while the origin is up; the
//     origin is then stopped (its listener closed) and the N nodes pull from the seed and each
//     other alone, resolving the tag from the seed's last resolution. It reports the preheat's time
//     and origin bytes besides create's figures, and starts the origin again when it ends.
//
// A node's pull is what a runtime does: the manifest by tag through the node's /v2 API, then the
// config and every layer, 3 at a time, each verified against its digest. Per scenario it reports
// p50/p95/p99/max pull time against the line-rate bound, the first layer's time to first byte,
// origin bytes served divided by the image size, peak RSS per agent and CPU seconds. It writes a
// Markdown report (-out) and a CDF plot of the pull times (-svg), and prints as its last line one
// JSON object.
//
// Usage, from the module root:
//
//	go run ./test/bench/rollout [-nodes 20] [-size 200MB] [-layers 4] [-link 25MB] [-origin-rate 50MB]
//	    [-scenarios create,update,origin-only[,create-private,seeded]] [-runs 1] [-private-users 1]
//
// Sizes and rates are SI (MB = 10^6 bytes) unless written with an "i" (MiB). Every process it
// starts is in its own process group with Pdeathsig set, stopped at the end or on a signal;
// temporary files go under -tmp (default $TMPDIR) and are removed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/shoal-oci/shoal/test/bench/internal/benchlab"
	"github.com/shoal-oci/shoal/test/bench/internal/benchnetns"
	"github.com/shoal-oci/shoal/test/bench/internal/benchorigin"
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
	"github.com/shoal-oci/shoal/test/bench/internal/benchreport"
	"github.com/shoal-oci/shoal/test/bench/internal/benchruntime"
)

type config struct {
	nodes      int
	size       int64
	layers     int
	link       int64
	agentArgs  []string // extra flags for every agent
	originRate int64
	scenarios  []string
	runs       int
	users      int // create-private: distinct credentials among the nodes
	wave       float64
	parallel   int
	timeout    time.Duration
	out, svg   string
	tmp        string
	keep       bool
	rev        string
	agentLog   string // --log-level of the agents
	logDir     string // write every agent's log here
	profDir    string // CPU profiles of node 0 and of this process
	netns      string // "": everything on 127.0.0.1; else the nodes' client over real links (benchlab)
	args       string
}

// defaultScenarios run when -scenarios is not given; seeded, which adds a seed process and stops
// the origin, is asked for by name.
var (
	defaultScenarios = []string{"create", "update", "origin-only"}
	allScenarios     = append(slices.Clone(defaultScenarios), "create-private", "seeded")
)

func main() {
	benchnetns.Child(benchlab.Roles()) // this binary, started again in a namespace as a lab's child
	var cfg config
	flag.IntVar(&cfg.nodes, "nodes", 20, "N: agent processes")
	size := flag.String("size", "200MB", "S: image size (the sum of its layers)")
	flag.IntVar(&cfg.layers, "layers", 4, "L: layers in the image")
	link := flag.String("link", "25MB", "B: each agent's --max-upload-rate and --max-download-rate, bytes/s")
	orate := flag.String("origin-rate", "50MB", "the origin's egress bandwidth, bytes/s, shared by all its responses")
	scen := flag.String("scenarios", strings.Join(defaultScenarios, ","), "scenarios to run, in this order ("+strings.Join(allScenarios, ", ")+")")
	flag.IntVar(&cfg.users, "private-users", 1, "create-private: distinct credentials, node i's runtime using user i mod this (1: one pull secret for all)")
	flag.IntVar(&cfg.runs, "runs", 1, "repetitions of every scenario (percentiles pool the nodes of all runs)")
	flag.Float64Var(&cfg.wave, "wave", 0.2, "update: fraction of the nodes in each wave")
	flag.IntVar(&cfg.parallel, "parallel", 3, "blobs a node's runtime downloads at a time (containerd: 3)")
	flag.DurationVar(&cfg.timeout, "timeout", 15*time.Minute, "limit on one scenario's pulls")
	flag.StringVar(&cfg.out, "out", "docs/benchmarks-rollout.md", "Markdown report, relative to the module root (\"\" = don't write)")
	flag.StringVar(&cfg.svg, "svg", "docs/rollout-cdf.svg", "CDF plot of the pull times, relative to the module root (\"\" = don't write)")
	flag.StringVar(&cfg.tmp, "tmp", os.TempDir(), "directory for temporary data")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory")
	flag.StringVar(&cfg.rev, "rev", "", "build the agent from this git revision (e.g. HEAD) instead of the working tree, which others may be editing")
	extra := flag.String("agent-args", "", "extra flags for every agent, space-separated (e.g. \"--chunk-size 1MiB\")")
	flag.StringVar(&cfg.agentLog, "agent-log-level", "warn", "the agents' --log-level (the report lists their WARN and ERROR lines)")
	flag.StringVar(&cfg.logDir, "agent-logs", "", "write every agent's log into this directory (<scenario>-<run>-node<i>.log)")
	flag.StringVar(&cfg.profDir, "pprof", "", "write CPU profiles here: node 0's agent (via --debug-listen) and this process, 20 s from 5 s after the first pull of every scenario run")
	flag.StringVar(&cfg.netns, "netns", "", "run over real links: every node and the origin in its own network namespace, links shaped with tbf to -link and -origin-rate, pulls by \"runtime\" (the simulated runtime) or \"ctr\" (ctr content fetch); needs root (create, update, origin-only)")
	flag.Parse()

	usage := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		os.Exit(2)
	}
	// SI unless written with an "i": 200MB is 200·10⁶ bytes, 200MiB 200·2²⁰.
	parse := func(s string) int64 {
		n, err := humanize.ParseBytes(s)
		if err != nil {
			return -1
		}
		return int64(n)
	}
	if cfg.size = parse(*size); cfg.size <= 0 {
		usage("-size %q: want a positive size such as 200MB", *size)
	}
	cfg.agentArgs = strings.Fields(*extra)
	if cfg.link = parse(*link); cfg.link < 0 {
		usage("-link %q: want a rate such as 25MB (0 = unlimited)", *link)
	}
	if cfg.originRate = parse(*orate); cfg.originRate < 0 {
		usage("-origin-rate %q: want a rate such as 50MB (0 = unlimited)", *orate)
	}
	if cfg.nodes < 2 || cfg.layers < 1 || cfg.runs < 1 || cfg.parallel < 1 || cfg.users < 1 || cfg.wave <= 0 || cfg.wave > 1 {
		usage("-nodes must be at least 2, -layers, -runs, -parallel and -private-users at least 1, -wave in (0, 1]")
	}
	if cfg.size < int64(cfg.layers) {
		usage("-size must be at least one byte per layer")
	}
	seen := map[string]bool{}
	for s := range strings.SplitSeq(*scen, ",") {
		s = strings.TrimSpace(s)
		switch s {
		case "create", "update", "origin-only", "create-private", "seeded":
			if !seen[s] {
				cfg.scenarios = append(cfg.scenarios, s)
			}
			seen[s] = true
		case "":
		default:
			usage("-scenarios: unknown %q (want %s)", s, strings.Join(allScenarios, ", "))
		}
	}
	if len(cfg.scenarios) == 0 {
		usage("-scenarios: none given")
	}
	if cfg.netns != "" && (cfg.netns != benchlab.Runtime && cfg.netns != benchlab.Ctr || seen["seeded"] || seen["create-private"] || cfg.profDir != "") {
		usage("-netns: want runtime or ctr, with the scenarios create, update and origin-only, without -pprof")
	}
	cfg.args = strings.Join(os.Args[1:], " ")
	benchproc.Main("rollout bench", func(ctx context.Context) error { return run(ctx, cfg) })
}

// logf logs the benchmark's progress.
var logf = benchproc.Logf

// env is what the scenarios share.
type env struct {
	cfg config
	bin string
	tmp string
	o   *benchorigin.Origin // nil with -netns: the lab's origin
	lab *benchlab.Lab
	// origin is e.o, or the lab's origin with -netns.
	origin interface {
		URL() string
		Counts() benchorigin.Counts
	}
	im *benchruntime.Image
	// prof takes CPU profiles of node 0 (with -pprof).
	prof *benchproc.Profiler
	// received counts every body byte the runtimes received, for the timeline.
	received atomic.Int64
	// authority authorizes the seed of the seeded scenario; its agents trust it.
	authority benchproc.SeedAuthority
}

func run(ctx context.Context, cfg config) error {
	m := machine{Machine: benchreport.ReadMachine()}
	root, err := benchproc.ModuleRoot()
	if err != nil {
		return err
	}
	tmp, err := benchproc.TempDir(cfg.tmp, "shoal-bench-rollout-", cfg.keep)
	if err != nil {
		return err
	}
	// The origin's image, and N copies in the agents' stores of one scenario.
	if err := benchproc.CheckFree(tmp, cfg.size*int64(cfg.nodes+2)); err != nil {
		return err
	}
	e := &env{cfg: cfg, tmp: tmp, prof: &benchproc.Profiler{Dir: cfg.profDir}}
	if e.authority, err = benchproc.NewSeedAuthority(tmp); err != nil {
		return err
	}

	src, err := benchproc.Checkout(ctx, root, tmp, cfg.rev)
	if err != nil {
		return err
	}
	m.agentBuild = src.Desc
	logf("building the agent from %s; writing a %s image in %d layers", src.Desc, human(cfg.size), cfg.layers)
	e.bin = filepath.Join(tmp, "shoal")
	var buildErr error
	var wg sync.WaitGroup
	wg.Go(func() { buildErr = src.Build(ctx, "./cmd/shoal", e.bin) })
	e.im, err = benchruntime.MakeImage(filepath.Join(tmp, "origin"), cfg.size, cfg.layers)
	wg.Wait()
	if err = errors.Join(err, buildErr); err != nil {
		return err
	}
	t := time.Now()
	syscall.Sync()
	logf("built; image written and synced (sync took %s)", time.Since(t).Round(time.Millisecond))
	if cfg.netns != "" {
		lc := benchlab.Config{Prefix: "shoalrb-", Dir: filepath.Join(tmp, "lab"), Nodes: cfg.nodes, Link: cfg.link, OriginRate: cfg.originRate,
			Blobs: filepath.Join(tmp, "origin"), Image: e.im, Client: cfg.netns, Parallel: cfg.parallel}
		if e.lab, err = benchlab.Start(ctx, lc); err != nil {
			return err
		}
		e.origin = e.lab
		logf("lab up: %s", e.lab.Describe())
	} else {
		if e.o, err = benchorigin.Start(filepath.Join(tmp, "origin"), benchorigin.Pacing{Egress: cfg.originRate}); err != nil {
			return err
		}
		benchproc.AtCleanup(e.o.Close)
		e.origin = e.o
		if err := e.im.Push(ctx, e.o.URL()); err != nil {
			return err
		}
	}

	var results []*scenarioResult
	for r := 1; r <= cfg.runs; r++ {
		for _, s := range cfg.scenarios {
			res, err := e.runScenario(ctx, s, r)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", s, r, err)
			}
			results = append(results, res)
		}
	}
	m.Finish()
	rep := &report{cfg: cfg, m: m, im: e.im, imageBytes: e.im.Bytes(), results: results}
	if e.lab != nil {
		rep.lab = e.lab.Describe()
	}
	md := rep.markdown()
	fmt.Fprint(os.Stderr, md)
	for _, f := range []struct{ path, content, keepFrom string }{{cfg.out, md, analysisMarker}, {cfg.svg, rep.svg(), ""}} {
		if f.path == "" {
			continue
		}
		p, err := benchreport.WriteFile(root, f.path, f.content, f.keepFrom)
		if err != nil {
			return err
		}
		logf("wrote %s", p)
	}
	fmt.Println(rep.json())
	return nil
}
