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
// -pprof DIR profiles the agent (through its --debug-listen). Temporary files go under -tmp (default
// $TMPDIR), at most about (4*runs+3)*size + 2*runs*paced-size (15 GiB with the defaults); they
// and every child process are removed on exit, including on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
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
	flag.StringVar(&cfg.pprof, "pprof", "", "profile the agent (served on its --debug-listen): write a CPU profile of each scenario, and heap and allocation profiles after the first clients run, into this directory")
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
	size, err := humanize.ParseBytes(*sizeFlag)
	if err != nil || size == 0 {
		fmt.Fprintf(os.Stderr, "-size %q: want a positive size such as 1GiB\n", *sizeFlag)
		os.Exit(2)
	}
	cfg.size, cfg.sizeArg = int64(size), *sizeFlag
	rate, err := humanize.ParseBytes(*pacedRate)
	if err != nil {
		fmt.Fprintf(os.Stderr, "-paced-rate %q: want a rate such as 125MB or 0\n", *pacedRate)
		os.Exit(2)
	}
	psize, err := humanize.ParseBytes(*pacedSize)
	if err != nil || psize == 0 {
		fmt.Fprintf(os.Stderr, "-paced-size %q: want a positive size\n", *pacedSize)
		os.Exit(2)
	}
	cfg.pacedRate, cfg.pacedSize = int64(rate), int64(psize)
	cfg.pacedRateArg, cfg.pacedSizeArg = *pacedRate, *pacedSize
	if cfg.p2p != "loopback" && cfg.p2p != "off" {
		fmt.Fprintf(os.Stderr, "-p2p %q: want loopback or off\n", cfg.p2p)
		os.Exit(2)
	}
	if cfg.runs < 1 || cfg.clients < 1 {
		fmt.Fprintln(os.Stderr, "-runs and -clients must be at least 1")
		os.Exit(2)
	}
	if cfg.rev != "" && cfg.src != "" {
		fmt.Fprintln(os.Stderr, "-rev and -src exclude each other")
		os.Exit(2)
	}
	benchproc.Main("mirror bench", func(ctx context.Context) error { return run(ctx, cfg) })
}

// logf logs the benchmark's progress.
var logf = benchproc.Logf

// env is what the scenarios share.
type env struct {
	cfg    config
	bin    string
	p2p    benchproc.P2P // the agent's peer-to-peer mode (m.p2p says which)
	tmp    string
	o      *benchorigin.Origin
	paced  *benchorigin.Origin // the same blobs, paced to cfg.pacedRate; nil without paced runs
	client *http.Client
	// pattern is random bytes for the write and hash floors.
	pattern []byte
	prof    *benchproc.Profiler
	res     *results
}

// startAgent starts an agent with a data directory dir, pulling through registries.
func (e *env) startAgent(ctx context.Context, registries []string, dir string) (*benchproc.Shoal, error) {
	return benchproc.Start(ctx, e.bin, benchproc.Options{DataDir: dir, Registries: registries, P2P: e.p2p, Debug: e.prof.On()})
}

func blobURL(base, d string) string { return base + "/v2/bench/mirror/blobs/" + d }

func run(ctx context.Context, cfg config) error {
	m := machine{Machine: benchreport.ReadMachine()}
	root, err := benchproc.ModuleRoot()
	if err != nil {
		return err
	}
	tmp, err := benchproc.TempDir(cfg.tmp, "shoal-bench-mirror-", cfg.keep)
	if err != nil {
		return err
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
	if err := benchproc.CheckFree(tmp, need); err != nil {
		return err
	}

	// Build the agent while making the blobs.
	src := benchproc.Source{Dir: cfg.src, Desc: "the source tree " + cfg.src + " (-src)"}
	if cfg.src == "" {
		if src, err = benchproc.Checkout(ctx, root, tmp, cfg.rev); err != nil {
			return err
		}
	}
	m.agentBuild = src.Desc
	logf("building the agent from %s; writing %d blobs of %s", src.Desc, nBlobs, benchreport.IBytes(cfg.size))
	bin := filepath.Join(tmp, "shoal")
	var buildErr error
	var wg sync.WaitGroup
	wg.Go(func() { buildErr = src.Build(ctx, "./cmd/shoal", bin) })
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
	p2p := benchproc.P2PDefault
	if out, _ := exec.CommandContext(ctx, bin, "agent", "--help").CombinedOutput(); strings.Contains(string(out), "--p2p-listen") {
		m.p2p, p2p = cfg.p2p, benchproc.P2PLoopback
		if cfg.p2p == "off" {
			p2p = benchproc.P2POff
		}
	}
	// Flush the blobs to disk now, so that their writeback does not compete with the measurements.
	t := time.Now()
	syscall.Sync()
	logf("blobs written and synced (sync took %s)", time.Since(t).Round(time.Millisecond))

	o, err := benchorigin.Start(originDir, benchorigin.Pacing{})
	if err != nil {
		return err
	}
	benchproc.AtCleanup(o.Close)
	registries := []string{o.URL()}
	var po *benchorigin.Origin
	if nPaced > 0 {
		if po, err = benchorigin.Start(originDir, benchorigin.Pacing{EachResponse: cfg.pacedRate}); err != nil {
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
	e := &env{cfg: cfg, bin: bin, p2p: p2p, tmp: tmp, o: o, paced: po, client: client,
		prof: &benchproc.Profiler{Dir: cfg.pprof},
		res:  &results{cfg: cfg, m: m}, pattern: benchmeasure.Pattern(1)}

	if nHit+nCold > 0 {
		// One agent serves the hit and cold scenarios.
		a, err := e.startAgent(ctx, registries, filepath.Join(tmp, "agent-a"))
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
	e.res.m.Finish()
	report := e.res.markdown()
	fmt.Print(report)
	if cfg.out != "" {
		p, err := benchreport.WriteFile(root, cfg.out, report, "")
		if err != nil {
			return err
		}
		logf("wrote %s", p)
	}
	return nil
}

// hit: blob d is pulled once through agent a and committed; then each run times a GET through
// the agent and the loopback TCP baseline on the stored file.
func (e *env) hit(ctx context.Context, a *benchproc.Shoal, d string) error {
	size, res := e.cfg.size, e.res
	logf("cache hit: filling the agent's store")
	if _, err := benchmeasure.Fetch(ctx, e.client, blobURL(a.URL, d), size); err != nil {
		return fmt.Errorf("filling the store: %w\n%s", err, a.Output())
	}
	if _, err := benchproc.WaitCommitted(ctx, a.DataDir, d, size, 2*time.Minute); err != nil {
		return err
	}
	syscall.Sync()
	stored := benchproc.CommittedPath(a.DataDir, d)
	const cache = `shoal_served_bytes_total{source="cache"}`
	cacheBefore, _ := a.Metric(ctx, cache)
	e.prof.StartCPU(ctx, a, "agent-hit.cpu.pprof")
	for i := range e.cfg.runs {
		var agent benchmeasure.Result
		var base, plain time.Duration
		var cpu time.Duration
		agentRun := func() error {
			cpu0, _ := benchproc.CPUTime(a.Pid())
			var err error
			agent, err = benchmeasure.Fetch(ctx, e.client, blobURL(a.URL, d), size)
			cpu1, _ := benchproc.CPUTime(a.Pid())
			cpu = cpu1 - cpu0
			return err
		}
		baseRun := func() error {
			var err error
			if base, err = benchmeasure.TCPCopy(ctx, stored, false); err != nil {
				return err
			}
			plain, err = benchmeasure.TCPCopy(ctx, stored, true)
			return err
		}
		if err := benchmeasure.InOrder(i%2 == 0, baseRun, agentRun); err != nil {
			return fmt.Errorf("cache hit run %d: %w", i+1, err)
		}
		res.hitAgent = append(res.hitAgent, benchreport.MBps(size, agent.Total))
		res.hitBase = append(res.hitBase, benchreport.MBps(size, base))
		res.hitPlain = append(res.hitPlain, benchreport.MBps(size, plain))
		res.hitCPU = append(res.hitCPU, cpu)
		logf("cache hit run %d: agent %.0f MB/s (CPU %s), loopback TCP %.0f MB/s with sendfile, %.0f MB/s with read/write",
			i+1, res.hitAgent[i], benchreport.Secs(cpu), res.hitBase[i], res.hitPlain[i])
	}
	e.prof.StopCPU(a)
	cacheAfter, _ := a.Metric(ctx, cache)
	res.hitFromCache = int64(cacheAfter - cacheBefore)
	res.hitOriginGets = e.o.BlobGets(d)
	return nil
}

// cold: each run GETs a blob the agent has never seen, straight from the origin and through the
// agent, in alternating order; then measures what writing and hashing that many bytes cost on
// their own (the "floors" of a verifying store-and-forward cache).
func (e *env) cold(ctx context.Context, a *benchproc.Shoal, blobs []string) error {
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
		const s, c = `shoal_origin_request_duration_seconds_sum{op="blob"}`, `shoal_origin_request_duration_seconds_count{op="blob"}`
		m, _ := a.Metrics(ctx, s, c)
		return m[s], m[c]
	}
	sum0, n0 := originWait()
	e.prof.StartCPU(ctx, a, "agent-cold.cpu.pprof")
	for i, d := range blobs {
		var agent, direct benchmeasure.Result
		var cpu, commit time.Duration
		agentRun := func() (err error) {
			agent, cpu, commit, err = e.agentFetch(ctx, a, blobURL(a.URL, d), d, size)
			return err
		}
		directRun := func() error {
			var err error
			direct, err = benchmeasure.Fetch(ctx, e.client, blobURL(e.o.URL(), d), size)
			return err
		}
		if err := benchmeasure.InOrder(i%2 == 0, directRun, agentRun); err != nil {
			return fmt.Errorf("cold run %d: %w\n%s", i+1, err, a.Output())
		}
		// The floor file is on the agent's file system, kept until the scenario ends.
		wf, _, _, err := benchmeasure.WriteFloor(floorDir, size, e.pattern)
		if err != nil {
			return err
		}
		hf := benchmeasure.HashFloor(size, e.pattern)
		res.coldAgent = append(res.coldAgent, agent)
		res.coldDirect = append(res.coldDirect, direct)
		res.coldCPU = append(res.coldCPU, cpu)
		res.coldCommitWait = append(res.coldCommitWait, commit)
		res.coldWriteFloor = append(res.coldWriteFloor, wf)
		res.coldHashFloor = append(res.coldHashFloor, hf)
		res.coldOriginGets = append(res.coldOriginGets, e.o.BlobGets(d))
		logf("cold run %d: agent TTFB %s total %s (CPU %s); direct TTFB %s total %s; commit +%s; write alone %s, SHA-256 alone %s",
			i+1, benchreport.Ms(agent.TTFB), benchreport.Secs(agent.Total), benchreport.Secs(cpu), benchreport.Ms(direct.TTFB), benchreport.Secs(direct.Total),
			benchreport.Secs(commit), benchreport.Secs(wf), benchreport.Secs(hf))
	}
	e.prof.StopCPU(a)
	if sum1, n1 := originWait(); n1 > n0 {
		res.coldOriginWait = time.Duration((sum1 - sum0) / (n1 - n0) * float64(time.Second))
		logf("cold: the agent waited %s on average for the origin's headers", benchreport.Ms(res.coldOriginWait))
	}
	return nil
}

// coldPaced is cold against the paced origin, reached through the agent with ?ns=.
func (e *env) coldPaced(ctx context.Context, a *benchproc.Shoal, blobs []string) error {
	size, res := e.cfg.pacedSize, e.res
	if err := e.warm(ctx, a, e.paced, blobs[0]); err != nil {
		return err
	}
	for i, d := range blobs {
		var agent, direct benchmeasure.Result
		agentRun := func() (err error) {
			agent, _, _, err = e.agentFetch(ctx, a, blobURL(a.URL, d)+"?ns="+e.paced.Host(), d, size)
			return err
		}
		directRun := func() error {
			var err error
			direct, err = benchmeasure.Fetch(ctx, e.client, blobURL(e.paced.URL(), d), size)
			return err
		}
		if err := benchmeasure.InOrder(i%2 == 0, directRun, agentRun); err != nil {
			return fmt.Errorf("paced cold run %d: %w\n%s", i+1, err, a.Output())
		}
		res.pacedAgent = append(res.pacedAgent, agent)
		res.pacedDirect = append(res.pacedDirect, direct)
		logf("cold run %d, origin paced to %s/s: agent TTFB %s total %s; direct TTFB %s total %s", i+1,
			e.cfg.pacedRateArg, benchreport.Ms(agent.TTFB), benchreport.Secs(agent.Total), benchreport.Ms(direct.TTFB), benchreport.Secs(direct.Total))
	}
	return nil
}

// warm makes both paths' keep-alive connections to origin o, and the agent's registry ping and
// authenticated transport for the repository, with a HEAD of blob d each way (the agent answers a
// HEAD from the origin without fetching), so that the timed GETs pay for none of them.
func (e *env) warm(ctx context.Context, a *benchproc.Shoal, o *benchorigin.Origin, d string) error {
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
func (e *env) agentFetch(ctx context.Context, a *benchproc.Shoal, url, d string, size int64) (benchmeasure.Result, time.Duration, time.Duration, error) {
	cpu0, _ := benchproc.CPUTime(a.Pid())
	r, err := benchmeasure.Fetch(ctx, e.client, url, size)
	if err != nil {
		return r, 0, 0, err
	}
	cpu1, _ := benchproc.CPUTime(a.Pid())
	commit, err := benchproc.WaitCommitted(ctx, a.DataDir, d, size, 2*time.Minute)
	return r, cpu1 - cpu0, commit, err
}

// clients: each run starts a fresh agent, so that VmHWM is this scenario's peak, and releases
// the clients at once on one cold blob.
func (e *env) clients(ctx context.Context, blobs []string) error {
	size, res, n := e.cfg.size, e.res, e.cfg.clients
	for i, d := range blobs {
		a, err := e.startAgent(ctx, []string{e.o.URL()}, filepath.Join(e.tmp, fmt.Sprintf("agent-m%d", i)))
		if err != nil {
			return err
		}
		idle, err := benchproc.Status(a.Pid(), "VmHWM")
		if err != nil {
			return err
		}
		if i == 0 {
			e.prof.StartCPU(ctx, a, "agent-clients.cpu.pprof")
		}
		var (
			start   = make(chan struct{})
			results = make([]benchmeasure.Result, n)
			errs    = make([]error, n)
			cwg     sync.WaitGroup
		)
		for c := range n {
			cwg.Go(func() {
				<-start
				results[c], errs[c] = benchmeasure.Fetch(ctx, e.client, blobURL(a.URL, d), size)
			})
		}
		t0 := time.Now()
		close(start)
		cwg.Wait()
		wall := time.Since(t0)
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("memory run %d: %w\n%s", i+1, err, a.Output())
		}
		if _, err := benchproc.WaitCommitted(ctx, a.DataDir, d, size, 2*time.Minute); err != nil {
			return err
		}
		if i == 0 {
			e.prof.StopCPU(a)
			e.prof.Save(ctx, a, "heap", "agent-clients.heap.pprof")
			e.prof.Save(ctx, a, "allocs", "agent-clients.allocs.pprof")
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
			slowestTTFB = max(slowestTTFB, r.TTFB)
		}
		res.memHWM = append(res.memHWM, hwm)
		res.memIdle = append(res.memIdle, idle)
		res.memGets = append(res.memGets, e.o.BlobGets(d))
		res.memWall = append(res.memWall, wall)
		res.memTTFB = append(res.memTTFB, slowestTTFB)
		logf("memory run %d: %d clients in %s (%.0f MB/s in all), agent VmHWM %s (%s after start), origin GETs %d",
			i+1, n, benchreport.Secs(wall), benchreport.MBps(int64(n)*size, wall), benchreport.MiB(hwm), benchreport.MiB(idle), res.memGets[i])
	}
	return nil
}
