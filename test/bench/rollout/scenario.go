package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchorigin"
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
	"github.com/shoal-oci/shoal/test/bench/internal/benchreport"
	"github.com/shoal-oci/shoal/test/bench/internal/benchruntime"
	"github.com/shoal-oci/shoal/test/bench/internal/benchtimeline"
)

// nodeResult is one node of one scenario run.
type nodeResult struct {
	pull                  *benchruntime.PullResult
	fromOrigin, fromPeers int64 // the agent's shoal_fetched_bytes_total{source}
	servedPeers           int64 // the agent's shoal_peer_served_bytes_total
	originReqs, originErr int64 // shoal_origin_requests_total and shoal_origin_errors_total, all labels
	staleTags             int64 // shoal_stale_tag_resolutions_total: tags answered while the origin was unreachable
	hwm                   int64 // VmHWM when the pulls were done
	cpu                   time.Duration
	exitErr               string
}

// scenarioResult is one run of one scenario.
type scenarioResult struct {
	name       string
	run        int
	p2p        bool
	waveSize   int
	nodes      []nodeResult
	startup    time.Duration // first agent started → all joined (or ready, without p2p)
	rtMin      int
	t0         time.Time     // the first pull started
	wall       time.Duration // first pull started → last pull's last byte
	commitLag  time.Duration // last pull's last byte → every agent has committed everything
	origin     benchorigin.Counts
	agentsCPU  time.Duration // all agents, first pull started → committed
	agentsUser time.Duration // of which user time
	idleCPU    time.Duration // all agents over idleWindow before the pulls
	idleWindow time.Duration
	benchCPU   time.Duration        // this process (origin, 20 runtimes hashing), same window
	machine    benchproc.MachineCPU // the whole machine, same window
	window     time.Duration
	timeline   benchtimeline.Timeline // origin egress and runtimes' receive (in this order) since t0
	logs       []*benchproc.LogKind
	failed     int
	seed       *seedRun // seeded only
}

// idleWindow is how long the agents' idle CPU is measured before the pulls.
const idleWindow = 3 * time.Second

// runScenario starts N fresh agents (new data directories), waits for them to join, runs the
// pulls of the scenario, collects what the agents and the origin measured, and stops them.
//
// seeded first starts a seed that the agents bootstrap from, preheats the image into it once they
// have joined, and stops the origin before the pulls; it starts the origin again (on a new port)
// when it ends, for the scenarios after it.
func (e *env) runScenario(ctx context.Context, name string, run int) (*scenarioResult, error) {
	cfg := e.cfg
	res := &scenarioResult{name: name, run: run, p2p: name != "origin-only", waveSize: cfg.nodes}
	if name == "update" {
		res.waveSize = max(1, int(float64(cfg.nodes)*cfg.wave+0.999))
	}
	root := filepath.Join(e.tmp, fmt.Sprintf("%s-%d", name, run))
	defer func() { _ = os.RemoveAll(root) }()
	agents := make([]*benchproc.Shoal, cfg.nodes)
	stopAll := func() []error {
		errs := make([]error, len(agents))
		var wg sync.WaitGroup
		for i, a := range agents {
			if a != nil {
				wg.Go(func() { errs[i] = a.Stop() })
			}
		}
		wg.Wait()
		return errs
	}
	defer stopAll()
	if name == "create-private" {
		users := map[string]string{}
		for i := range cfg.users {
			u, pw := credential(i)
			users[u] = pw
		}
		e.o.RequireAuth(users)
		defer e.o.RequireAuth(nil)
	}

	// Start: node 0 first (the others bootstrap through it, or all through the seed), then the
	// rest, 4 at a time.
	t := time.Now()
	var sr *seedRun
	if name == "seeded" {
		var err error
		if sr, err = e.startSeed(ctx, filepath.Join(root, "seed")); err != nil {
			return nil, err
		}
		res.seed = sr
		defer func() { _ = sr.proc.Stop() }()
		defer func() {
			if err := e.o.Start(); err != nil {
				logf("%s run %d: starting the origin again: %v", name, run, err)
			}
		}()
	}
	dir := func(i int) string { return filepath.Join(root, fmt.Sprintf("node%02d", i)) }
	opts := agentOpts{p2p: res.p2p, needID: res.p2p && sr == nil, seeded: sr != nil}
	if sr != nil {
		opts.bootstrap = []string{sr.proc.Multiaddr()}
	}
	var err error
	opts.debug = e.prof.On()
	if agents[0], err = e.startAgent(ctx, dir(0), 0, opts); err != nil {
		return nil, err
	}
	opts.needID, opts.debug = false, false
	if res.p2p && sr == nil {
		opts.bootstrap = []string{agents[0].Multiaddr()}
	}
	errs := make([]error, cfg.nodes)
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := 1; i < cfg.nodes; i++ {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			agents[i], errs[i] = e.startAgent(ctx, dir(i), i, opts)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if res.p2p {
		if err := e.waitJoined(ctx, agents, res); err != nil {
			return nil, err
		}
	}
	res.startup = time.Since(t)
	logf("%s run %d: %d agents up in %s (p2p %v, smallest routing table %d)", name, run, cfg.nodes, secs(res.startup), res.p2p, res.rtMin)
	if sr != nil {
		if err := e.preheat(ctx, sr); err != nil {
			return nil, err
		}
		logf("%s run %d: preheated the seed in %s; the origin served %.2f× the image", name, run, secs(sr.preheat),
			float64(sr.preheatOrigin.Bytes)/float64(e.im.Bytes()))
		if err := e.stopOrigin(sr); err != nil {
			return nil, err
		}
		logf("%s run %d: origin stopped (connection refused: %v)", name, run, sr.refused)
	}
	time.Sleep(time.Second) // let start-up work (identify, first provides) settle
	// The agents' CPU while idle (joined, nothing asked), for comparison with the pulls.
	idle0 := make([]time.Duration, cfg.nodes)
	for i, a := range agents {
		idle0[i], _ = benchproc.CPUTime(a.Pid())
	}
	t = time.Now()
	time.Sleep(idleWindow)
	res.idleWindow = time.Since(t)

	// Measure from here.
	cpu0 := make([]time.Duration, cfg.nodes)
	user0 := make([]time.Duration, cfg.nodes)
	for i, a := range agents {
		u, s, _ := benchproc.CPUTimes(a.Pid())
		cpu0[i], user0[i] = u+s, u
		res.idleCPU += cpu0[i] - idle0[i]
	}
	var seedCPU0 time.Duration
	if sr != nil {
		seedCPU0, _ = benchproc.CPUTime(sr.proc.Pid())
	}
	bench0, _ := benchproc.CPUTime(0)
	mach0 := benchproc.ReadMachineCPU()
	orig0 := e.origin.Counts()

	sctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	res.t0 = time.Now()
	timeline := benchtimeline.Record(res.t0, func() int64 { return e.origin.Counts().Bytes }, e.received.Load)

	var profWG sync.WaitGroup
	if cfg.profDir != "" {
		profWG.Go(func() { e.profile(sctx, agents[0], fmt.Sprintf("%s-%d", name, run)) })
	}
	defer profWG.Wait()

	res.nodes = make([]nodeResult, cfg.nodes)
	waves := (cfg.nodes + res.waveSize - 1) / res.waveSize
	for w := range waves {
		lo, hi := w*res.waveSize, min((w+1)*res.waveSize, cfg.nodes)
		gate := make(chan struct{})
		var pw, ready sync.WaitGroup
		ready.Add(hi - lo)
		for i := lo; i < hi; i++ {
			pw.Go(func() {
				if e.lab != nil { // a process in the node's namespace, ready before the gate opens
					res.nodes[i].pull = e.lab.Pull(sctx, i, &e.received, ready.Done, gate)
					return
				}
				ready.Done()
				rt := benchruntime.New(cfg.parallel, &e.received)
				defer rt.Close()
				if name == "create-private" {
					rt.Authorization = benchorigin.BasicAuth(credential(i % cfg.users))
				}
				<-gate
				res.nodes[i].pull = rt.Pull(sctx, agents[i].URL, e.im)
			})
		}
		ready.Wait()
		close(gate)
		pw.Wait()
		if waves > 1 {
			var slowest time.Duration
			for i := lo; i < hi; i++ {
				slowest = max(slowest, res.nodes[i].pull.Duration())
			}
			logf("%s run %d: wave %d of %d (nodes %d–%d) done, slowest %s", name, run, w+1, waves, lo, hi-1, secs(slowest))
		}
	}
	for i, n := range res.nodes {
		res.wall = max(res.wall, n.pull.End.Sub(res.t0))
		if n.pull.Err != nil {
			res.failed++
			logf("%s run %d: node %d pull failed: %v", name, run, i, n.pull.Err)
		}
	}

	// Wait until every agent has committed (no transfer in flight), so the CPU and memory
	// figures include the whole of the work.
	endPulls := time.Now()
	_ = benchproc.WaitFor(ctx, 60*time.Second, 20*time.Millisecond, "agents committing", func() bool {
		for _, a := range agents {
			if a.Exited() {
				continue
			}
			st, err := a.Status(ctx)
			if err != nil || len(st.Transfers) > 0 {
				return false
			}
		}
		return true
	})
	res.commitLag = time.Since(endPulls)
	res.timeline = timeline.Stop()
	res.window = time.Since(res.t0)
	res.machine = benchproc.ReadMachineCPU().Sub(mach0)
	bench1, _ := benchproc.CPUTime(0)
	res.benchCPU = bench1 - bench0
	res.origin = e.origin.Counts().Since(orig0)

	samples := []string{`shoal_fetched_bytes_total{source="origin"}`, `shoal_fetched_bytes_total{source="peer"}`, `shoal_peer_served_bytes_total`,
		`shoal_origin_requests_total`, `shoal_origin_errors_total`, `shoal_stale_tag_resolutions_total`}
	for i, a := range agents {
		n := &res.nodes[i]
		if a.Exited() {
			n.exitErr = fmt.Sprintf("agent exited during the scenario: %v", a.WaitErr())
			continue
		}
		u1, s1, _ := benchproc.CPUTimes(a.Pid())
		n.cpu = u1 + s1 - cpu0[i]
		res.agentsCPU += n.cpu
		res.agentsUser += u1 - user0[i]
		n.hwm, _ = benchproc.Status(a.Pid(), "VmHWM")
		if m, err := a.Metrics(ctx, samples...); err == nil {
			n.fromOrigin, n.fromPeers, n.servedPeers = int64(m[samples[0]]), int64(m[samples[1]]), int64(m[samples[2]])
			n.originReqs, n.originErr, n.staleTags = int64(m[samples[3]]), int64(m[samples[4]]), int64(m[samples[5]])
		}
	}
	if sr != nil {
		if sr.proc.Exited() {
			sr.exitErr = fmt.Sprintf("seed exited during the scenario: %v", sr.proc.WaitErr())
		} else {
			c, _ := benchproc.CPUTime(sr.proc.Pid())
			sr.cpu = c - seedCPU0
			sr.hwm, _ = benchproc.Status(sr.proc.Pid(), "VmHWM")
			if m, err := sr.proc.Metrics(ctx, samples...); err == nil {
				sr.fromOrigin, sr.servedPeers = int64(m[samples[0]]), int64(m[samples[2]])
				sr.originReqs, sr.originErr, sr.staleTags = int64(m[samples[3]]), int64(m[samples[4]]), int64(m[samples[5]])
			}
		}
	}
	for i, err := range stopAll() {
		if err != nil {
			res.nodes[i].exitErr = firstLine(err.Error())
		}
	}
	procs := agents
	if sr != nil {
		if err := sr.proc.Stop(); err != nil && sr.exitErr == "" {
			sr.exitErr = firstLine(err.Error())
		}
		procs = append(slices.Clone(agents), sr.proc)
	}
	res.logs = benchproc.GroupLogs(procs)
	if cfg.logDir != "" {
		if err := os.MkdirAll(cfg.logDir, 0o755); err != nil {
			return nil, err
		}
		for i, a := range agents {
			p := filepath.Join(cfg.logDir, fmt.Sprintf("%s-%d-node%02d.log", name, run, i))
			if err := os.WriteFile(p, []byte(a.Output()), 0o644); err != nil {
				return nil, err
			}
		}
		if sr != nil {
			p := filepath.Join(cfg.logDir, fmt.Sprintf("%s-%d-seed.log", name, run))
			if err := os.WriteFile(p, []byte(sr.proc.Output()), 0o644); err != nil {
				return nil, err
			}
		}
	}
	logf("%s run %d: pulls p50 %s, max %s; origin served %.2f× the image; agents %s CPU; %d failed",
		name, run, secs(benchreport.Percentile(res.durations(), 50)), secs(benchreport.Percentile(res.durations(), 100)),
		float64(res.origin.Bytes)/float64(e.im.Bytes()), secs(res.agentsCPU), res.failed)
	return res, nil
}

// waitJoined waits until every agent has a connected peer (and, for up to 10 s more, until
// every routing table holds min(N-1, 8) peers, so that lookups see the cluster).
func (e *env) waitJoined(ctx context.Context, agents []*benchproc.Shoal, res *scenarioResult) error {
	rt := func() (connected bool, rtMin int) {
		connected, rtMin = true, len(agents)
		for _, a := range agents {
			st, err := a.Status(ctx)
			if err != nil || len(st.ConnectedPeers) == 0 {
				return false, 0
			}
			rtMin = min(rtMin, st.RoutingTableSize)
		}
		return connected, rtMin
	}
	if err := benchproc.WaitFor(ctx, 60*time.Second, 20*time.Millisecond, "every agent connected to a peer", func() bool { ok, _ := rt(); return ok }); err != nil {
		return err
	}
	want := min(len(agents)-1, 8)
	_ = benchproc.WaitFor(ctx, 10*time.Second, 20*time.Millisecond, "routing tables", func() bool { _, m := rt(); return m >= want })
	_, res.rtMin = rt()
	return nil
}

// credential is create-private's user i and its password.
func credential(i int) (user, password string) {
	return fmt.Sprintf("user%d", i), fmt.Sprintf("secret-%d", i)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// durations are the successful pulls' times.
func (r *scenarioResult) durations() []time.Duration {
	var out []time.Duration
	for _, n := range r.nodes {
		if n.pull != nil && n.pull.Err == nil {
			out = append(out, n.pull.Duration())
		}
	}
	return out
}

// profile takes 20 s CPU profiles of agent a and of this process, from 5 s on.
func (e *env) profile(ctx context.Context, a *benchproc.Shoal, name string) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(5 * time.Second):
	}
	if err := os.MkdirAll(e.cfg.profDir, 0o755); err != nil {
		logf("pprof: %v", err)
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		f, err := os.Create(filepath.Join(e.cfg.profDir, name+"-bench.pprof"))
		if err != nil {
			logf("pprof: %v", err)
			return
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			logf("pprof: %v", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Second):
		}
		pprof.StopCPUProfile()
	})
	e.prof.StartCPU(ctx, a, name+"-node00.pprof")
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Second):
	}
	e.prof.StopCPU(a)
	wg.Wait()
}
