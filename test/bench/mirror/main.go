// Command mirror benchmarks the shoal agent as a pull-through OCI mirror on one machine, against
// physical baselines measured in the same run:
//
//  1. cache hit: a blob already in the agent's store, GET through the agent, vs. the same file sent
//     over a loopback TCP socket with io.Copy (sendfile), and with plain read/write calls;
//  2. cold: a blob the agent has not stored, GET through the agent, vs. GET straight from the
//     origin: time to first byte and total time; beside it, what writing and hashing the blob cost
//     alone, and the same comparison against an origin paced to a network's speed;
//  3. memory: the agent's peak RSS (VmHWM) while N clients pull the same cold blob at once, and
//     the number of GETs the origin saw for it.
//
// Usage, from the module root:
//
//	go run ./test/bench/mirror [-size 1GiB] [-clients 10] [-runs 3] [-rev HEAD]
//
// It builds ./cmd/shoal (from the working tree, or from a git revision with -rev, or from another
// tree with -src), runs the origin in this process and the agent as a child process, all on
// 127.0.0.1, prints a Markdown table and writes it to docs/benchmarks-mirror.md. Every scenario is
// repeated -runs times; the tables show medians. -scenarios runs a subset (without a report);
// -pprof DIR profiles the agent (see profagent/). Temporary files go under -tmp (default
// $TMPDIR), at most about (4*runs+3)*size + 2*runs*paced-size (15 GiB with the defaults); they
// and every child process are removed on exit, including on SIGINT or SIGTERM.
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
	clients   int
	runs      int
	out       string
	tmp       string
	keep      bool
	pprof     string
	scenarios map[string]bool

	pacedRate    int64 // bytes/s of the paced origin in the cold scenario; 0 = no paced runs
	pacedSize    int64
	pacedRateArg string
	pacedSizeArg string

	rev string // build the agent from this git revision instead of the working tree
	src string // or from this other source tree (a prototype)

	p2p string // "loopback" or "off": how an agent that has peer-to-peer sharing runs it
}

func main() {
	var cfg config
	sizeFlag := flag.String("size", "1GiB", "blob size (bytes, or with KiB/MiB/GiB/KB/MB/GB)")
	flag.IntVar(&cfg.clients, "clients", 10, "concurrent clients in the memory scenario")
	flag.IntVar(&cfg.runs, "runs", 3, "repetitions of each scenario; medians are reported")
	flag.StringVar(&cfg.out, "out", "docs/benchmarks-mirror.md", "results file, relative to the module root (\"\" = don't write)")
	flag.StringVar(&cfg.tmp, "tmp", os.TempDir(), "directory for the temporary origin and agent data")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory")
	flag.StringVar(&cfg.pprof, "pprof", "", "profile the agent: build ./test/bench/mirror/profagent (the agent package plus pprof) instead of ./cmd/shoal and write CPU and heap profiles of each scenario into this directory")
	pacedRate := flag.String("paced-rate", "125MB", "cold scenario: also pull through an origin paced to this many bytes per second (125MB = 1 Gbit/s); 0 = skip")
	pacedSize := flag.String("paced-size", "256MiB", "blob size for the paced-origin cold runs")
	flag.StringVar(&cfg.rev, "rev", "", "build the agent from this git revision (e.g. HEAD) instead of the working tree, which others may be editing")
	flag.StringVar(&cfg.src, "src", "", "build the agent from this source tree (say, a prototype checkout) instead of the working tree")
	flag.StringVar(&cfg.p2p, "p2p", "loopback", "for an agent with peer-to-peer sharing: \"loopback\" keeps it on (the default configuration) but listening on 127.0.0.1 with no peers; \"off\" runs a plain mirror (--p2p=false)")
	scen := flag.String("scenarios", "hit,cold,clients", "scenarios to run (comma-separated); the report is written only when all three run")
	flag.Parse()
	cfg.scenarios = map[string]bool{}
	for _, s := range strings.Split(*scen, ",") {
		switch s = strings.TrimSpace(s); s {
		case "hit", "cold", "clients":
			cfg.scenarios[s] = true
		default:
			fmt.Fprintf(os.Stderr, "-scenarios: unknown %q (want hit, cold, clients)\n", s)
			os.Exit(2)
		}
	}
	size, err := parseSize(*sizeFlag)
	if err != nil || size <= 0 {
		fmt.Fprintf(os.Stderr, "-size %q: want a positive size such as 1GiB\n", *sizeFlag)
		os.Exit(2)
	}
	cfg.size, cfg.sizeArg = size, *sizeFlag
	if cfg.pacedRate, err = parseSize(*pacedRate); err != nil || cfg.pacedRate < 0 {
		fmt.Fprintf(os.Stderr, "-paced-rate %q: want a rate such as 125MB or 0\n", *pacedRate)
		os.Exit(2)
	}
	if cfg.pacedSize, err = parseSize(*pacedSize); err != nil || cfg.pacedSize <= 0 {
		fmt.Fprintf(os.Stderr, "-paced-size %q: want a positive size\n", *pacedSize)
		os.Exit(2)
	}
	cfg.pacedRateArg, cfg.pacedSizeArg = *pacedRate, *pacedSize
	if cfg.p2p != "loopback" && cfg.p2p != "off" {
		fmt.Fprintf(os.Stderr, "-p2p %q: want loopback or off\n", cfg.p2p)
		os.Exit(2)
	}
	if cfg.runs < 1 || cfg.clients < 1 {
		fmt.Fprintln(os.Stderr, "-runs and -clients must be at least 1")
		os.Exit(2)
	}

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\n%v: stopping the agent and removing temporary files\n", s)
		cancel()
		benchproc.RunCleanups()
		os.Exit(130)
	}()

	err = run(ctx, cfg)
	benchproc.RunCleanups()
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mirror bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// env is what the scenarios share.
type env struct {
	cfg    config
	bin    string
	p2p    string // the agent's peer-to-peer mode: cfg.p2p, or "" when the agent has none
	tmp    string
	o      *origin
	paced  *origin // the same blobs, paced to cfg.pacedRate; nil without paced runs
	client *http.Client
	// pattern is random bytes for the write and hash floors.
	pattern []byte
	prof    *profiler
	res     *results
}

func blobURL(base, d string) string { return base + "/v2/bench/mirror/blobs/" + d }

func run(ctx context.Context, cfg config) error {
	began := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(cfg.tmp, "shoal-bench-mirror-")
	if err != nil {
		return err
	}
	if cfg.keep {
		logf("keeping %s", tmp)
	} else {
		benchproc.AtCleanup(func() { _ = os.RemoveAll(tmp) })
	}
	var nHit, nCold, nMem, nPaced int
	if cfg.scenarios["hit"] {
		nHit = 1
	}
	if cfg.scenarios["cold"] {
		nCold = cfg.runs
		if cfg.pacedRate > 0 {
			nPaced = cfg.runs
		}
	}
	if cfg.scenarios["clients"] {
		nMem = cfg.runs
	}
	nBlobs := nHit + nCold + nMem
	// Origin blobs, agent stores (hit and cold in one, one memory run at a time), write floors.
	need := int64(nBlobs)*cfg.size + int64(nHit+nCold+1)*cfg.size + int64(nCold)*cfg.size +
		2*int64(nPaced)*cfg.pacedSize
	if free, err := freeBytes(tmp); err == nil && free < need+need/10 {
		return fmt.Errorf("%s has %s free; this run needs about %s (use -tmp or a smaller -size)",
			tmp, human(free), human(need))
	}

	m := machineInfo()
	m.loadBefore = loadavg()

	// Build the agent while making the blobs.
	logf("building the agent; writing %d blobs of %s", nBlobs, human(cfg.size))
	bin := filepath.Join(tmp, "shoal")
	pkg := "./cmd/shoal"
	if cfg.pprof != "" {
		pkg = "./test/bench/mirror/profagent"
		if err := os.MkdirAll(cfg.pprof, 0o755); err != nil {
			return err
		}
	}
	var buildErr error
	var wg sync.WaitGroup
	wg.Go(func() { m.agentBuild, buildErr = buildAgent(ctx, root, tmp, cfg.rev, cfg.src, pkg, bin) })
	originDir := filepath.Join(tmp, "origin")
	blobs, err := benchblob.MakeN(originDir, cfg.size, nBlobs)
	var pacedBlobs []string
	if err == nil && nPaced > 0 {
		pacedBlobs, err = benchblob.MakeN(originDir, cfg.pacedSize, nPaced)
	}
	wg.Wait()
	if err != nil {
		return err
	}
	if buildErr != nil {
		return buildErr
	}
	// Agents with peer-to-peer sharing listen on 0.0.0.0:4001 by default: keep them on loopback.
	p2p := ""
	if out, _ := exec.CommandContext(ctx, bin, "agent", "--help").CombinedOutput(); strings.Contains(string(out), "--p2p-listen") {
		p2p = cfg.p2p
	}
	m.p2p = p2p
	// Flush the blobs to disk now, so that their writeback does not compete with the measurements.
	t := time.Now()
	syscall.Sync()
	logf("blobs written and synced (sync took %s)", time.Since(t).Round(time.Millisecond))

	o, err := startOrigin(originDir, 0)
	if err != nil {
		return err
	}
	benchproc.AtCleanup(o.Close)
	registries := []string{o.URL()}
	var po *origin
	if nPaced > 0 {
		if po, err = startOrigin(originDir, cfg.pacedRate); err != nil {
			return err
		}
		benchproc.AtCleanup(po.Close)
		registries = append(registries, po.URL())
	}
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: cfg.clients + 4,
		IdleConnTimeout:     time.Minute,
	}}
	benchproc.AtCleanup(client.CloseIdleConnections)
	e := &env{cfg: cfg, bin: bin, p2p: p2p, tmp: tmp, o: o, paced: po, client: client, prof: newProfiler(cfg.pprof),
		res: &results{cfg: cfg, m: m}, pattern: make([]byte, 4<<20)}
	_, _ = rand.NewChaCha8([32]byte{1}).Read(e.pattern)

	if nHit+nCold > 0 {
		// One agent serves the hit and cold scenarios.
		a, err := startAgent(ctx, bin, registries, filepath.Join(tmp, "agent-a"), e.p2p, e.prof.agentArgs()...)
		if err != nil {
			return err
		}
		if nHit > 0 {
			if err := e.hit(ctx, a, blobs[0]); err != nil {
				return err
			}
		}
		if nCold > 0 {
			if err := e.cold(ctx, a, blobs[nHit:nHit+nCold]); err != nil {
				return err
			}
			if nPaced > 0 {
				if err := e.coldPaced(ctx, a, pacedBlobs); err != nil {
					return err
				}
			}
		}
		if hwm, err := benchproc.Status(a.Pid(), "VmHWM"); err == nil {
			e.res.hitColdHWM = hwm
		}
		if err := a.Stop(); err != nil {
			return err
		}
		_ = os.RemoveAll(a.DataDir)
	}
	if nMem > 0 {
		if err := e.clients(ctx, blobs[nHit+nCold:]); err != nil {
			return err
		}
	}

	if nHit == 0 || nCold == 0 || nMem == 0 {
		logf("not all scenarios ran: no report")
		return nil
	}
	e.res.m.loadAfter = loadavg()
	e.res.m.elapsed = time.Since(began)
	report := e.res.markdown()
	fmt.Print(report)
	if cfg.out != "" {
		p := cfg.out
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, p)
		}
		if err := os.WriteFile(p, []byte(report), 0o644); err != nil {
			return err
		}
		logf("wrote %s", p)
	}
	return nil
}

// hit: blob d is pulled once through agent a and committed; then each run times a GET through
// the agent and the loopback TCP baseline on the stored file.
func (e *env) hit(ctx context.Context, a *agentProc, d string) error {
	size, res := e.cfg.size, e.res
	logf("cache hit: filling the agent's store")
	if _, err := fetch(ctx, e.client, blobURL(a.URL, d), size); err != nil {
		return fmt.Errorf("filling the store: %w\n%s", err, a.Output())
	}
	if _, err := waitCommitted(ctx, a.DataDir, d, size); err != nil {
		return err
	}
	syscall.Sync()
	stored := committedPath(a.DataDir, d)
	cacheBefore, _ := metricSum(ctx, a.URL, "shoal_served_bytes_total", `source="cache"`)
	e.prof.start(ctx, a, "hit")
	for i := range e.cfg.runs {
		var agent fetchResult
		var base, plain time.Duration
		var cpu time.Duration
		agentRun := func() error {
			cpu0, _ := benchproc.CPUTime(a.Pid())
			var err error
			agent, err = fetch(ctx, e.client, blobURL(a.URL, d), size)
			cpu1, _ := benchproc.CPUTime(a.Pid())
			cpu = cpu1 - cpu0
			return err
		}
		baseRun := func() error {
			var err error
			if base, err = tcpBaseline(ctx, stored, false); err != nil {
				return err
			}
			plain, err = tcpBaseline(ctx, stored, true)
			return err
		}
		if err := inOrder(i%2 == 0, baseRun, agentRun); err != nil {
			return fmt.Errorf("cache hit run %d: %w", i+1, err)
		}
		res.hitAgent = append(res.hitAgent, mbps(size, agent.total))
		res.hitBase = append(res.hitBase, mbps(size, base))
		res.hitPlain = append(res.hitPlain, mbps(size, plain))
		res.hitCPU = append(res.hitCPU, cpu)
		logf("cache hit run %d: agent %.0f MB/s (CPU %s), loopback TCP %.0f MB/s with sendfile, %.0f MB/s with read/write",
			i+1, res.hitAgent[i], secs(cpu), res.hitBase[i], res.hitPlain[i])
	}
	e.prof.stop(ctx, a, "hit")
	cacheAfter, _ := metricSum(ctx, a.URL, "shoal_served_bytes_total", `source="cache"`)
	res.hitFromCache = int64(cacheAfter - cacheBefore)
	res.hitOriginGets = e.o.BlobGets(d)
	return nil
}

// cold: each run GETs a blob the agent has never seen, straight from the origin and through the
// agent, in alternating order; then measures what writing and hashing that many bytes cost on
// their own (the "floors" of a verifying store-and-forward cache).
func (e *env) cold(ctx context.Context, a *agentProc, blobs []string) error {
	size, res := e.cfg.size, e.res
	if err := e.warm(ctx, a, e.o, blobs[0]); err != nil {
		return err
	}
	floorDir := filepath.Join(e.tmp, "floors")
	if err := os.MkdirAll(floorDir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(floorDir)
	originWait := func() (sum, n float64) {
		sum, _ = metricSum(ctx, a.URL, "shoal_origin_request_duration_seconds_sum", `op="blob"`)
		n, _ = metricSum(ctx, a.URL, "shoal_origin_request_duration_seconds_count", `op="blob"`)
		return sum, n
	}
	sum0, n0 := originWait()
	e.prof.start(ctx, a, "cold")
	for i, d := range blobs {
		var agent, direct fetchResult
		var cpu, commit time.Duration
		agentRun := func() (err error) {
			agent, cpu, commit, err = e.agentFetch(ctx, a, blobURL(a.URL, d), d, size)
			return err
		}
		directRun := func() error {
			var err error
			direct, err = fetch(ctx, e.client, blobURL(e.o.URL(), d), size)
			return err
		}
		if err := inOrder(i%2 == 0, directRun, agentRun); err != nil {
			return fmt.Errorf("cold run %d: %w\n%s", i+1, err, a.Output())
		}
		// The floor file is on the agent's file system, kept until the scenario ends.
		wf, _, err := writeFloor(floorDir, size, e.pattern)
		if err != nil {
			return err
		}
		hf := hashFloor(size, e.pattern)
		res.coldAgent = append(res.coldAgent, agent)
		res.coldDirect = append(res.coldDirect, direct)
		res.coldCPU = append(res.coldCPU, cpu)
		res.coldCommitWait = append(res.coldCommitWait, commit)
		res.coldWriteFloor = append(res.coldWriteFloor, wf)
		res.coldHashFloor = append(res.coldHashFloor, hf)
		res.coldOriginGets = append(res.coldOriginGets, e.o.BlobGets(d))
		logf("cold run %d: agent TTFB %s total %s (CPU %s); direct TTFB %s total %s; commit +%s; write alone %s, SHA-256 alone %s",
			i+1, ms(agent.ttfb), secs(agent.total), secs(cpu), ms(direct.ttfb), secs(direct.total),
			secs(commit), secs(wf), secs(hf))
	}
	e.prof.stop(ctx, a, "cold")
	if sum1, n1 := originWait(); n1 > n0 {
		res.coldOriginWait = time.Duration((sum1 - sum0) / (n1 - n0) * float64(time.Second))
		logf("cold: the agent waited %s on average for the origin's headers", ms(res.coldOriginWait))
	}
	return nil
}

// coldPaced is cold against the paced origin, reached through the agent with ?ns=.
func (e *env) coldPaced(ctx context.Context, a *agentProc, blobs []string) error {
	size, res := e.cfg.pacedSize, e.res
	if err := e.warm(ctx, a, e.paced, blobs[0]); err != nil {
		return err
	}
	for i, d := range blobs {
		var agent, direct fetchResult
		agentRun := func() (err error) {
			agent, _, _, err = e.agentFetch(ctx, a, blobURL(a.URL, d)+"?ns="+e.paced.Host(), d, size)
			return err
		}
		directRun := func() error {
			var err error
			direct, err = fetch(ctx, e.client, blobURL(e.paced.URL(), d), size)
			return err
		}
		if err := inOrder(i%2 == 0, directRun, agentRun); err != nil {
			return fmt.Errorf("paced cold run %d: %w\n%s", i+1, err, a.Output())
		}
		res.pacedAgent = append(res.pacedAgent, agent)
		res.pacedDirect = append(res.pacedDirect, direct)
		logf("cold run %d, origin paced to %s/s: agent TTFB %s total %s; direct TTFB %s total %s", i+1,
			e.cfg.pacedRateArg, ms(agent.ttfb), secs(agent.total), ms(direct.ttfb), secs(direct.total))
	}
	return nil
}

// warm makes both paths' keep-alive connections to origin o, and the agent's registry ping and
// authenticated transport for the repository, with a HEAD of blob d each way (the agent answers a
// HEAD from the origin without fetching), so that the timed GETs pay for none of them.
func (e *env) warm(ctx context.Context, a *agentProc, o *origin, d string) error {
	for _, u := range []string{blobURL(o.URL(), d), blobURL(a.URL, d) + "?ns=" + o.Host()} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
		resp, err := e.client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HEAD %s: %s", u, resp.Status)
		}
	}
	return nil
}

// agentFetch GETs a cold blob through the agent, measuring the agent's CPU time for it, then
// waits for the agent to commit the blob (fsync) so that nothing else is timed meanwhile.
func (e *env) agentFetch(ctx context.Context, a *agentProc, url, d string, size int64) (fetchResult, time.Duration, time.Duration, error) {
	cpu0, _ := benchproc.CPUTime(a.Pid())
	r, err := fetch(ctx, e.client, url, size)
	if err != nil {
		return r, 0, 0, err
	}
	cpu1, _ := benchproc.CPUTime(a.Pid())
	commit, err := waitCommitted(ctx, a.DataDir, d, size)
	return r, cpu1 - cpu0, commit, err
}

// clients: each run starts a fresh agent, so that VmHWM is this scenario's peak, and releases
// the clients at once on one cold blob.
func (e *env) clients(ctx context.Context, blobs []string) error {
	size, res, n := e.cfg.size, e.res, e.cfg.clients
	for i, d := range blobs {
		a, err := startAgent(ctx, e.bin, []string{e.o.URL()}, filepath.Join(e.tmp, fmt.Sprintf("agent-m%d", i)), e.p2p, e.prof.agentArgs()...)
		if err != nil {
			return err
		}
		idle, err := benchproc.Status(a.Pid(), "VmHWM")
		if err != nil {
			return err
		}
		if i == 0 {
			e.prof.start(ctx, a, "clients")
		}
		var (
			start   = make(chan struct{})
			results = make([]fetchResult, n)
			errs    = make([]error, n)
			cwg     sync.WaitGroup
		)
		for c := range n {
			cwg.Go(func() {
				<-start
				results[c], errs[c] = fetch(ctx, e.client, blobURL(a.URL, d), size)
			})
		}
		t0 := time.Now()
		close(start)
		cwg.Wait()
		wall := time.Since(t0)
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("memory run %d: %w\n%s", i+1, err, a.Output())
		}
		if _, err := waitCommitted(ctx, a.DataDir, d, size); err != nil {
			return err
		}
		if i == 0 {
			e.prof.stop(ctx, a, "clients")
			e.prof.heap(ctx, a, "clients")
		}
		hwm, err := benchproc.Status(a.Pid(), "VmHWM")
		if err != nil {
			return err
		}
		if err := a.Stop(); err != nil {
			return err
		}
		_ = os.RemoveAll(a.DataDir)
		var slowestTTFB time.Duration
		for _, r := range results {
			slowestTTFB = max(slowestTTFB, r.ttfb)
		}
		res.memHWM = append(res.memHWM, hwm)
		res.memIdle = append(res.memIdle, idle)
		res.memGets = append(res.memGets, e.o.BlobGets(d))
		res.memWall = append(res.memWall, wall)
		res.memTTFB = append(res.memTTFB, slowestTTFB)
		logf("memory run %d: %d clients in %s (%.0f MB/s in all), agent VmHWM %s (%s after start), origin GETs %d",
			i+1, n, secs(wall), mbps(int64(n)*size, wall), mib(hwm), mib(idle), res.memGets[i])
	}
	return nil
}

// inOrder runs a then b, or b then a, to spread any order effect over the runs.
func inOrder(aFirst bool, a, b func() error) error {
	if !aFirst {
		a, b = b, a
	}
	if err := a(); err != nil {
		return err
	}
	return b()
}

// metricSum adds up the samples of metric name, on the agent's /metrics, whose labels include
// label (e.g. `op="blob"`; "" = all).
func metricSum(ctx context.Context, base, name, label string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sb strings.Builder
	if _, err := copyLimited(&sb, resp.Body, 4<<20); err != nil {
		return 0, err
	}
	var sum float64
	for line := range strings.SplitSeq(sb.String(), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		metric, labels, _ := strings.Cut(series, "{")
		if metric != name || !strings.Contains("{"+labels, label) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", name, line, err)
		}
		sum += v
	}
	return sum, nil
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

// buildAgent builds pkg into bin from the working tree at root, or from git revision rev
// extracted under tmp, and describes what it built.
func buildAgent(ctx context.Context, root, tmp, rev, srcDir, pkg, bin string) (string, error) {
	git := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", root}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	src, desc := root, "the working tree"
	switch {
	case srcDir != "":
		if rev != "" {
			return "", errors.New("-rev and -src exclude each other")
		}
		src, desc = srcDir, "the source tree "+srcDir+" (-src)"
	case rev == "":
		if head, err := git("rev-parse", "--short", "HEAD"); err == nil {
			desc = "the working tree at " + head
			if st, err := git("status", "--porcelain", "--", "agent", "cmd", "registryapi", "internal", "p2p", "go.mod", "go.sum"); err == nil && st != "" {
				desc += ", with uncommitted changes"
			}
		}
	default:
		full, err := git("rev-parse", "--verify", rev+"^{commit}")
		if err != nil {
			return "", fmt.Errorf("-rev %q: not a commit", rev)
		}
		src = filepath.Join(tmp, "src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			return "", err
		}
		archive := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", full)
		untar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
		pipe, err := archive.StdoutPipe()
		if err != nil {
			return "", err
		}
		untar.Stdin = pipe
		if err := archive.Start(); err != nil {
			return "", err
		}
		if out, err := untar.CombinedOutput(); err != nil {
			_ = archive.Wait()
			return "", fmt.Errorf("extracting %s: %v\n%s", rev, err, out)
		}
		if err := archive.Wait(); err != nil {
			return "", fmt.Errorf("git archive %s: %w", rev, err)
		}
		desc = fmt.Sprintf("git revision %s (-rev %s)", full[:12], rev)
	}
	// The profiling wrapper lives beside this benchmark and may not be in the other tree.
	if strings.HasSuffix(pkg, "profagent") && src != root {
		b, err := os.ReadFile(filepath.Join(root, pkg, "main.go"))
		if err == nil {
			err = os.MkdirAll(filepath.Join(src, pkg), 0o755)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(src, pkg, "main.go"), b, 0o644)
		}
		if err != nil {
			return "", err
		}
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %v\n%s", pkg, desc, err, out)
	}
	return desc, nil
}
