// Command p2p benchmarks Shoal's peer-to-peer path on one machine, over 127.0.0.1, against
// baselines measured in the same run:
//
//  1. peer transfer: agent process A holds a blob (pulled through it from the origin, which is then
//     blocked); agent process B, bootstrapped to A, GETs it through its /v2 API, so that it comes
//     from A over libp2p (TLS + yamux, /shoal/content/1). Baselines: plain loopback TCP io.Copy of
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
// It builds the agent (from the working tree, or with -rev from a git revision, which then also
// supplies the agent package of scenario 2), prints a Markdown report and writes it to
// docs/benchmarks-p2p.md, keeping the hand-written part of that file. -pprof writes CPU profiles of
// the transfer's two agents and of scenario 2's trials; -dht-trace an execution trace of the trials,
// which test/bench/p2p/traceana explains. Every process it starts is in its own process group with
// Pdeathsig set, stopped at the end or on a signal; temporary files go under -tmp (default $TMPDIR)
// and are removed. About 2.5 minutes on an idle 2-core machine (builds included), and 12 GiB of
// temporary disk.
package main

import (
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"

	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchblob"
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
	agentKind string
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
	flag.StringVar(&cfg.pprof, "pprof", "", "write CPU profiles into this directory: of the receiving (B) and sending (A) agents of every scenario 1 run (uses benchagent), and of scenario 2's process during the trials")
	flag.StringVar(&cfg.dhtTrace, "dht-trace", "", "write a Go execution trace of scenario 2's trials to this file (then: go tool trace -pprof=sched FILE)")
	flag.DurationVar(&cfg.gap, "trial-gap", 0, "scenario 2: pause before each trial (lets the previous trial's commit and announcement finish)")
	flag.StringVar(&cfg.agentKind, "agent", "auto", "agent binary: shoal (./cmd/shoal), bench (./test/bench/p2p/benchagent), or auto (shoal if its agents start a p2p node)")
	flag.StringVar(&cfg.rev, "rev", "", "build the agents, and the in-process agents of scenario 2, from this git revision (e.g. HEAD) instead of the working tree, which others may be editing")
	scen := flag.String("scenarios", "transfer,dht,procs", "scenarios to run; the report is written only when all run")
	child := flag.Bool("dht-child", false, "internal: run scenario 2 in this process and print JSON")
	flag.Parse()

	parse := func(name, s string) int64 {
		v, err := parseSize(s)
		if err != nil || v <= 0 {
			fmt.Fprintf(os.Stderr, "-%s %q: want a positive size such as 1GiB\n", name, s)
			os.Exit(2)
		}
		return v
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
	switch cfg.agentKind {
	case "auto", "shoal", "bench":
	default:
		fmt.Fprintln(os.Stderr, "-agent: want auto, shoal or bench")
		os.Exit(2)
	}
	if cfg.pprof != "" && cfg.agentKind == "shoal" {
		fmt.Fprintln(os.Stderr, "-pprof needs the benchagent (-agent auto or bench)")
		os.Exit(2)
	}
	cfg.args = strings.Join(os.Args[1:], " ")

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\n%v: stopping the agents and removing temporary files\n", s)
		cancel()
		benchproc.RunCleanups()
		os.Exit(130)
	}()

	err := run(ctx, cfg)
	benchproc.RunCleanups()
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "p2p bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// env is what the scenarios share.
type env struct {
	cfg      config
	bin      string
	childExe string // the program that runs scenario 2 (-dht-child)
	tmp      string
	o        *origin
	client   *http.Client
	pattern  []byte // random bytes for the write and hash floors
	res      *results
}

func run(ctx context.Context, cfg config) error {
	began := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(cfg.tmp, "shoal-bench-p2p-")
	if err != nil {
		return err
	}
	if cfg.keep {
		logf("keeping %s", tmp)
	} else {
		benchproc.AtCleanup(func() { _ = os.RemoveAll(tmp) })
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
	if free, err := freeBytes(tmp); err == nil && free < need+need/10 {
		return fmt.Errorf("%s has %s free; this run needs about %s (use -tmp or a smaller -size)", tmp, human(free), human(need))
	}

	m := machineInfo(root)
	m.loadBefore = loadavg()
	res := &results{cfg: cfg, m: m}
	e := &env{cfg: cfg, tmp: tmp, res: res, pattern: make([]byte, 4<<20),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}}
	benchproc.AtCleanup(e.client.CloseIdleConnections)
	_, _ = rand.NewChaCha8([32]byte{2}).Read(e.pattern)

	// Build the agent binaries (and, with -rev, this benchmark for scenario 2) while writing the
	// blobs.
	src, desc := root, ""
	if cfg.rev != "" {
		if src, desc, err = extractRev(ctx, root, tmp, cfg.rev); err != nil {
			return err
		}
		e.childExe = filepath.Join(tmp, "p2pbench")
	} else {
		desc = buildDesc(ctx, root)
		if e.childExe, err = os.Executable(); err != nil {
			return err
		}
	}
	res.m.agentBuild = desc
	logf("building the agents from %s; writing a %s blob", desc, human(cfg.size))
	shoalBin, benchBin := filepath.Join(tmp, "shoal"), filepath.Join(tmp, "benchagent")
	var buildErr1, buildErr2, buildErr3 error
	var wg sync.WaitGroup
	wg.Go(func() {
		buildErr1 = goBuild(ctx, src, "./cmd/shoal", shoalBin)
		if cfg.rev != "" {
			buildErr3 = goBuild(ctx, src, "./test/bench/p2p", e.childExe)
		}
	})
	wg.Go(func() { buildErr2 = goBuild(ctx, src, "./test/bench/p2p/benchagent", benchBin) })
	originDir := filepath.Join(tmp, "origin")
	big, err := benchblob.Make(originDir, cfg.size, 1)
	var small string
	if err == nil {
		small, err = benchblob.Make(originDir, cfg.procBlob, 2)
	}
	wg.Wait()
	if err = errors.Join(err, buildErr1, buildErr2, buildErr3); err != nil {
		return err
	}
	t := time.Now()
	syscall.Sync()
	logf("built; blobs written and synced (sync took %s)", time.Since(t).Round(time.Millisecond))

	if e.o, err = startOrigin(originDir); err != nil {
		return err
	}
	benchproc.AtCleanup(e.o.Close)

	// Which agent binary: ./cmd/shoal when its agents do start a p2p node.
	e.bin, res.agentNote = shoalBin, "./cmd/shoal (`shoal agent`)"
	if cfg.agentKind != "shoal" {
		ok, err := shoalDoesP2P(ctx, shoalBin, e.o.URL(), filepath.Join(tmp, "probe"))
		if err != nil {
			return err
		}
		switch {
		case cfg.pprof != "":
			e.bin, res.agentNote = benchBin, "./test/bench/p2p/benchagent (the agent package with p2p from flags, plus pprof; -pprof was given)"
		case cfg.agentKind == "bench":
			e.bin, res.agentNote = benchBin, "./test/bench/p2p/benchagent (-agent bench)"
		case !ok:
			e.bin, res.agentNote = benchBin, "./test/bench/p2p/benchagent: the agent package with `P2P: &p2p.Config{ListenAddrs, Bootstrap}` from the same flags. "+
				"**`shoal agent` was not usable**: a probe started it with `--p2p-listen`, and its /shoal/v1/status had no peerID (as before 5bb85f8, when cmd/shoal's agentConfig did not set agent.Config.P2P)"
			logf("`shoal agent --p2p-listen ...` starts no p2p node (no peerID in /shoal/v1/status): using benchagent")
		}
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
	res.m.loadAfter = loadavg()
	res.m.elapsed = time.Since(began)
	report := res.markdown()
	fmt.Print(report)
	if cfg.out != "" {
		p := cfg.out
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, p)
		}
		if kept := keepAnalysis(p); kept != "" {
			report += "\n" + kept
		}
		if err := os.WriteFile(p, []byte(report), 0o644); err != nil {
			return err
		}
		logf("wrote %s", p)
	}
	return nil
}

// shoalDoesP2P starts `shoal agent` with a p2p listen address and reports whether it runs a p2p
// node (its status shows a peer ID).
func shoalDoesP2P(ctx context.Context, bin, origin, dir string) (bool, error) {
	a, err := startAgent(ctx, bin, []string{origin}, dir, agentOpts{})
	if err != nil {
		return false, fmt.Errorf("probe of shoal agent: %w", err)
	}
	st, err := getStatus(ctx, a.URL)
	stopErr := a.Stop()
	_ = os.RemoveAll(dir)
	if err != nil {
		return false, err
	}
	return st.PeerID != "", stopErr
}

func goBuild(ctx context.Context, root, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// buildDesc describes the tree the agents were built from.
func buildDesc(ctx context.Context, root string) string {
	git := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", root}, args...)...).Output()
		return strings.TrimRight(string(out), "\n"), err
	}
	head, err := git("rev-parse", "--short=12", "HEAD")
	if err != nil {
		return "the working tree (no git revision)"
	}
	desc := "the working tree at git revision " + head
	if st, err := git("status", "--porcelain", "--", "agent", "cmd", "registryapi", "internal", "p2p", "go.mod", "go.sum"); err == nil && st != "" {
		var files []string
		for l := range strings.SplitSeq(st, "\n") {
			if len(l) > 3 {
				files = append(files, strings.TrimSpace(l[3:]))
			}
		}
		desc += ", with uncommitted changes to " + strings.Join(files, ", ")
	}
	return desc
}

// extractRev extracts git revision rev into tmp/src, adds this benchmark's own sources (which the
// revision may lack) and returns the tree and a description.
func extractRev(ctx context.Context, root, tmp, rev string) (string, string, error) {
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--verify", rev+"^{commit}").Output()
	if err != nil {
		return "", "", fmt.Errorf("-rev %q: not a commit", rev)
	}
	full := strings.TrimSpace(string(out))
	src := filepath.Join(tmp, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", "", err
	}
	archive := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", full)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return "", "", err
	}
	untar.Stdin = pipe
	if err := archive.Start(); err != nil {
		return "", "", err
	}
	if b, err := untar.CombinedOutput(); err != nil {
		_ = archive.Wait()
		return "", "", fmt.Errorf("extracting %s: %v\n%s", rev, err, b)
	}
	if err := archive.Wait(); err != nil {
		return "", "", fmt.Errorf("git archive %s: %w", rev, err)
	}
	bench := filepath.Join("test", "bench", "p2p")
	err = filepath.WalkDir(filepath.Join(root, bench), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dst := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		return "", "", err
	}
	return src, fmt.Sprintf("git revision %s (-rev %s; this benchmark's own files from the working tree)", full[:12], rev), nil
}

// moduleRoot finds the shoal module's root from the working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run this from inside the shoal module")
	}
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	if !strings.Contains(string(b), "module github.com/shoal-oci/shoal\n") {
		return "", fmt.Errorf("%s is not the shoal module", gomod)
	}
	return filepath.Dir(gomod), nil
}

func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	return int64(v * float64(mult)), nil
}
