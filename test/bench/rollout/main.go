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
//	    [-scenarios create,update,origin-only[,seeded]] [-runs 1]
//
// Sizes and rates are SI (MB = 10^6 bytes) unless written with an "i" (MiB). Every process it
// starts is in its own process group with Pdeathsig set, stopped at the end or on a signal;
// temporary files go under -tmp (default $TMPDIR) and are removed.
package main

import (
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"

	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
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
	args       string
}

// defaultScenarios run when -scenarios is not given; seeded, which adds a seed process and stops
// the origin, is asked for by name.
var (
	defaultScenarios = []string{"create", "update", "origin-only"}
	allScenarios     = append(slices.Clone(defaultScenarios), "seeded")
)

func main() {
	var cfg config
	flag.IntVar(&cfg.nodes, "nodes", 20, "N: agent processes")
	size := flag.String("size", "200MB", "S: image size (the sum of its layers)")
	flag.IntVar(&cfg.layers, "layers", 4, "L: layers in the image")
	link := flag.String("link", "25MB", "B: each agent's --max-upload-rate and --max-download-rate, bytes/s")
	orate := flag.String("origin-rate", "50MB", "the origin's egress bandwidth, bytes/s, shared by all its responses")
	scen := flag.String("scenarios", strings.Join(defaultScenarios, ","), "scenarios to run, in this order (create, update, origin-only, seeded)")
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
	flag.Parse()

	usage := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		os.Exit(2)
	}
	var err error
	if cfg.size, err = parseSize(*size); err != nil || cfg.size <= 0 {
		usage("-size %q: want a positive size such as 200MB", *size)
	}
	cfg.agentArgs = strings.Fields(*extra)
	if cfg.link, err = parseSize(*link); err != nil || cfg.link < 0 {
		usage("-link %q: want a rate such as 25MB (0 = unlimited)", *link)
	}
	if cfg.originRate, err = parseSize(*orate); err != nil || cfg.originRate < 0 {
		usage("-origin-rate %q: want a rate such as 50MB (0 = unlimited)", *orate)
	}
	if cfg.nodes < 2 || cfg.layers < 1 || cfg.runs < 1 || cfg.parallel < 1 || cfg.wave <= 0 || cfg.wave > 1 {
		usage("-nodes must be at least 2, -layers, -runs and -parallel at least 1, -wave in (0, 1]")
	}
	if cfg.size < int64(cfg.layers) {
		usage("-size must be at least one byte per layer")
	}
	seen := map[string]bool{}
	for s := range strings.SplitSeq(*scen, ",") {
		s = strings.TrimSpace(s)
		switch s {
		case "create", "update", "origin-only", "seeded":
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
	err = run(ctx, cfg)
	benchproc.RunCleanups()
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rollout bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// env is what the scenarios share.
type env struct {
	cfg config
	bin string
	tmp string
	o   *origin
	im  *image
}

// imageBytes is what one pull downloads besides the manifest: config and layers.
func (e *env) imageBytes() int64 { return e.im.layerBytes() + e.im.config.Size }

func run(ctx context.Context, cfg config) error {
	began := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(cfg.tmp, "shoal-bench-rollout-")
	if err != nil {
		return err
	}
	if cfg.keep {
		logf("keeping %s", tmp)
	} else {
		benchproc.AtCleanup(func() { _ = os.RemoveAll(tmp) })
	}
	// The origin's image, and N copies in the agents' stores of one scenario.
	if need := cfg.size * int64(cfg.nodes+2); true {
		if free, err := freeBytes(tmp); err == nil && free < need+need/10 {
			return fmt.Errorf("%s has %s free; this run needs about %s (use -tmp or a smaller -size)", tmp, human(free), human(need))
		}
	}
	m := machineInfo()
	m.loadBefore = loadavg()
	e := &env{cfg: cfg, tmp: tmp}

	src, desc := root, ""
	if cfg.rev != "" {
		if src, desc, err = extractRev(ctx, root, tmp, cfg.rev); err != nil {
			return err
		}
	} else {
		desc = buildDesc(ctx, root)
	}
	m.agentBuild = desc
	logf("building the agent from %s; writing a %s image in %d layers", desc, human(cfg.size), cfg.layers)
	e.bin = filepath.Join(tmp, "shoal")
	var buildErr error
	var wg sync.WaitGroup
	wg.Go(func() { buildErr = goBuild(ctx, src, "./cmd/shoal", e.bin) })
	e.im, err = makeImage(filepath.Join(tmp, "origin"), cfg.size, cfg.layers)
	wg.Wait()
	if err = errors.Join(err, buildErr); err != nil {
		return err
	}
	t := time.Now()
	syscall.Sync()
	logf("built; image written and synced (sync took %s)", time.Since(t).Round(time.Millisecond))
	if e.o, err = startOrigin(filepath.Join(tmp, "origin"), cfg.originRate); err != nil {
		return err
	}
	benchproc.AtCleanup(e.o.Close)
	if err := e.im.push(ctx, e.o.URL()); err != nil {
		return err
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
	m.loadAfter = loadavg()
	m.elapsed = time.Since(began)
	rep := &report{cfg: cfg, m: m, im: e.im, imageBytes: e.imageBytes(), results: results}
	md := rep.markdown()
	fmt.Fprint(os.Stderr, md)
	write := func(p, content string) error {
		if p == "" {
			return nil
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, p)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
		logf("wrote %s", p)
		return nil
	}
	if cfg.out != "" {
		p := cfg.out
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, p)
		}
		if kept := keepAnalysis(p); kept != "" {
			md += "\n" + kept
		}
	}
	if err := errors.Join(write(cfg.out, md), write(cfg.svg, rep.svg())); err != nil {
		return err
	}
	fmt.Println(rep.json())
	return nil
}

func goBuild(ctx context.Context, root, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// buildDesc describes the tree the agent was built from.
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

// extractRev extracts git revision rev into tmp/src and returns the tree and a description.
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
	return src, fmt.Sprintf("git revision %s (-rev %s)", full[:12], rev), nil
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

// parseSize reads 200MB (10^6), 200MiB (2^20), 1.5GB, 4096 or 4096B.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"kB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
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
