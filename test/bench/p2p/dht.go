package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/test/bench/internal/benchblob"
	"github.com/shoal-oci/shoal/test/bench/internal/benchmeasure"
	"github.com/shoal-oci/shoal/test/bench/internal/benchorigin"
	"github.com/shoal-oci/shoal/test/bench/internal/benchpeerfetch"
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
	"github.com/shoal-oci/shoal/test/bench/internal/benchreport"
)

// dhtResults are scenario 2's (and 3a's) measurements, made in a child process that holds only
// the origin and the agents, so that its memory figures are theirs.
type dhtResults struct {
	Nodes, Seeds, Trials int
	BlobSize             int64
	RTTarget             int
	JoinSeconds          float64 // all agents created → every routing table at RTTarget (or the time limit)
	RTMin, RTMedian      int
	RTMax                int
	AdvertiseSeconds     float64 // last pull through a holder → every blob findable from the checker

	TTFB, Total []float64 // ms, per successful trial: requester's GET through its /v2 API
	// TTFB split by whether the requester had a connection to the holder before its GET.
	TTFBConnected, TTFBNewConn []float64
	HitTTFB                    []float64              // ms, the same blob GET through its holder, from its store (baseline)
	Rest                       []float64              // ms, TTFB minus the requester's own lookup, when that is known
	Lookup                     []float64              // ms, the requester's own DHT lookup inside that GET (its histogram's sum)
	Find                       []float64              // ms, FindProviders for the same blob from a third node
	FindHits                   int                    // FindProviders answers that included the holder
	Steps                      []benchpeerfetch.Steps // a peer fetch's steps done by hand on a fourth node
	// A DHT client's lookup of the same blob: until the holder arrives, and until the lookup ends.
	ProbeFirst, ProbeAll []float64
	PeerOK               int // trials whose bytes the requester fetched from a peer
	Failures             []string
	Notes                []string // trials whose metrics did not show every byte from a peer
	HeldTwice            int      // blobs that more than their holder held when the trials began
	Refused              int      // blob requests the blocked origin refused during the trials

	TrialSeconds, TrialCPUSeconds float64 // wall and CPU time (whole process) of the trial loop
	GCCycles                      uint64  // garbage collections during the trial loop
	GCCPUSeconds                  float64 // CPU time the garbage collector used during it

	// Process memory: before the agents were created, and after the trials (after a GC).
	RSSBefore, RSSAfter, HWM     int64
	HeapBefore, HeapAfter        uint64 // runtime.MemStats.HeapInuse
	SysBefore, SysAfter          uint64 // runtime.MemStats.Sys
	GoroutinesBefore, Goroutines int
	Elapsed                      float64
}

type dhtConfig struct {
	nodes, seeds, trials int
	blobSize             int64
	tmp                  string
	trace                string        // write an execution trace of the trials here
	pprof                string        // write a CPU profile of the trials into this directory
	gap                  time.Duration // pause before each trial
}

type gcStats struct {
	cycles uint64
	cpu    float64
}

// readGC reads the collector's completed cycles and CPU time from runtime/metrics.
func readGC() gcStats {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	var g gcStats
	if s[0].Value.Kind() == metrics.KindUint64 {
		g.cycles = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindFloat64 {
		g.cpu = s[1].Value.Float64()
	}
	return g
}

// runDHTChild runs scenario 2 in a child process (this program with -dht-child) and returns its
// results.
func (e *env) runDHTChild(ctx context.Context) (*dhtResults, error) {
	dir := filepath.Join(e.tmp, "dht")
	cmd := exec.CommandContext(ctx, e.childExe, "-dht-child",
		"-nodes", strconv.Itoa(e.cfg.nodes), "-seeds", strconv.Itoa(e.cfg.seeds),
		"-trials", strconv.Itoa(e.cfg.trials), "-dht-blob", strconv.FormatInt(e.cfg.dhtBlob, 10), "-tmp", dir,
		"-dht-trace", e.cfg.dhtTrace, "-pprof", e.cfg.pprof, "-trial-gap", e.cfg.gap.String())
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	defer os.RemoveAll(dir)
	if err != nil {
		return nil, fmt.Errorf("DHT child: %w", err)
	}
	var r dhtResults
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("DHT child output: %w: %q", err, out)
	}
	return &r, nil
}

// dhtChildMain is the child's main: it writes dhtResults as JSON to stdout.
func dhtChildMain(cfg dhtConfig) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := runDHT(ctx, cfg)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

type inprocNode struct {
	a    *agent.Agent
	url  string
	dir  string
	done chan struct{}
}

func runDHT(ctx context.Context, cfg dhtConfig) (*dhtResults, error) {
	began := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := &dhtResults{Nodes: cfg.nodes, Seeds: cfg.seeds, Trials: cfg.trials, BlobSize: cfg.blobSize}
	if cfg.nodes < 4 || cfg.seeds < 1 || cfg.seeds >= cfg.nodes {
		return nil, errors.New("-nodes must be at least 4, -seeds between 1 and nodes-1")
	}
	if err := os.MkdirAll(cfg.tmp, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(cfg.tmp)

	// The origin and the blobs first, so that the "before" figures include them.
	originDir := filepath.Join(cfg.tmp, "origin")
	allBlobs, err := benchblob.MakeN(originDir, cfg.blobSize, cfg.trials)
	if err != nil {
		return nil, err
	}
	o, err := benchorigin.Start(originDir, benchorigin.Pacing{})
	if err != nil {
		return nil, err
	}
	defer o.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}
	defer client.CloseIdleConnections()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapBefore, res.SysBefore = ms.HeapInuse, ms.Sys
	res.RSSBefore, _ = benchproc.Status(os.Getpid(), "VmRSS")
	res.GoroutinesBefore = runtime.NumGoroutine()

	// Agents: node 0 alone, the other seeds join it, everyone else joins the seeds.
	nodes := make([]*inprocNode, cfg.nodes)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		for _, n := range nodes {
			if n != nil {
				<-n.done
			}
		}
	}()
	var seedAddrs []string
	start := func(i int, boot []string) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		dir := filepath.Join(cfg.tmp, fmt.Sprintf("node%02d", i))
		a, err := agent.New(agent.Config{
			DataDir:    dir,
			Registries: []string{o.URL()},
			P2P:        &p2p.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: boot},
		})
		if err != nil {
			ln.Close()
			return fmt.Errorf("node %d: %w", i, err)
		}
		n := &inprocNode{a: a, url: "http://" + ln.Addr().String(), dir: dir, done: make(chan struct{})}
		nodes[i] = n
		wg.Go(func() { defer close(n.done); _ = a.Serve(ctx, ln) })
		return nil
	}
	t0 := time.Now()
	for i := range cfg.nodes {
		var boot []string
		switch {
		case i == 0:
		case i < cfg.seeds:
			boot = seedAddrs[:1]
		default:
			boot = seedAddrs
		}
		if err := start(i, boot); err != nil {
			return nil, err
		}
		if i < cfg.seeds {
			seedAddrs = append(seedAddrs, nodes[i].a.Node().Addrs()...)
		}
	}
	res.RTTarget = min(cfg.nodes-1, 20)
	rts := func() []int {
		out := make([]int, len(nodes))
		for i, n := range nodes {
			out[i] = n.a.Node().RoutingTableSize()
		}
		slices.Sort(out)
		return out
	}
	if err := benchproc.WaitFor(ctx, 60*time.Second, 10*time.Millisecond, "routing tables", func() bool { return rts()[0] >= res.RTTarget }); err != nil {
		logf("dht: %v; going on (routing tables %v)", err, rts())
	}
	res.JoinSeconds = time.Since(t0).Seconds()
	rt := rts()
	res.RTMin, res.RTMedian, res.RTMax = rt[0], rt[len(rt)/2], rt[len(rt)-1]
	logf("dht: %d agents joined in %.1f s; routing tables min %d, median %d, max %d",
		cfg.nodes, res.JoinSeconds, res.RTMin, res.RTMedian, res.RTMax)

	// Roles: node 0 checks that records are out; holders, requesters and finders are the others.
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(not ...int) int {
		for {
			i := 1 + rng.IntN(cfg.nodes-1)
			if !slices.Contains(not, i) {
				return i
			}
		}
	}
	// heldBy lists the nodes (never node 0) whose stores hold blob d.
	heldBy := func(d string) []int {
		var out []int
		for i, n := range nodes[1:] {
			if _, err := os.Stat(benchproc.CommittedPath(n.dir, d)); err == nil {
				out = append(out, i+1)
			}
		}
		return out
	}
	holders := make([]int, len(allBlobs))
	for i, d := range allBlobs {
		holders[i] = pick()
		h := nodes[holders[i]]
		if _, err := benchmeasure.Fetch(ctx, client, blobURL(h.url, d), cfg.blobSize); err != nil {
			return nil, fmt.Errorf("pull through holder %d: %w", holders[i], err)
		}
	}
	for i, d := range allBlobs {
		if _, err := benchproc.WaitCommitted(ctx, nodes[holders[i]].dir, d, cfg.blobSize, 30*time.Second); err != nil {
			return nil, err
		}
	}
	t1 := time.Now()
	checker := nodes[0].a.Node()
	for i, d := range allBlobs {
		want := nodes[holders[i]].a.Node().ID()
		err := benchproc.WaitFor(ctx, 20*time.Second, 10*time.Millisecond, "blob "+d+" advertised", func() bool {
			ps, _ := checker.FindProviders(ctx, digest.Digest(d))
			return slices.ContainsFunc(ps, func(p peerInfo) bool { return p.ID == want })
		})
		if err != nil {
			return nil, err
		}
	}
	res.AdvertiseSeconds = time.Since(t1).Seconds()
	logf("dht: %d blobs of %s pulled through random holders; all findable %.2f s after the last commit",
		len(allBlobs), benchreport.IBytes(cfg.blobSize), res.AdvertiseSeconds)
	blobs := allBlobs[:cfg.trials]
	for _, d := range blobs {
		if len(heldBy(d)) > 1 {
			res.HeldTwice++
		}
	}
	// Warm the client's keep-alive connection to every agent.
	for _, n := range nodes {
		if resp, err := client.Get(n.url + "/readyz"); err == nil {
			resp.Body.Close()
		}
	}

	var seedInfos []peer.AddrInfo
	for _, n := range nodes[:cfg.seeds] {
		h := n.a.Node().Host()
		seedInfos = append(seedInfos, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	}
	pr, err := benchpeerfetch.NewProbe(ctx, seedInfos)
	if err != nil {
		return nil, err
	}
	defer pr.Close()

	// Blob GETs only: a HEAD still binds the size, as a manifest would for a runtime's pull. With
	// HEADs refused too, a requester's GET of a blob no manifest named waits for the origin
	// client's retries of the HEAD (about 1.4 s) before it takes a peer's bytes unbound, and the
	// trial measures those retries rather than the peer path.
	o.BlockGets(true)
	if cfg.trace != "" {
		f, err := os.Create(cfg.trace)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return nil, err
		}
		defer trace.Stop()
	}
	if cfg.pprof != "" {
		f, err := os.Create(filepath.Join(cfg.pprof, "dht-trials.cpu.pprof"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	cpu0, _ := benchproc.CPUTime(os.Getpid())
	gc0 := readGC()
	t2 := time.Now()
	for i, d := range blobs {
		if cfg.gap > 0 {
			time.Sleep(cfg.gap)
		}
		h := holders[i]
		// Nodes that hold d already: the holder, and (in revisions with coordinators) the node
		// that fetched it from the origin for the cluster when the holder asked for it first.
		held := heldBy(d)
		r := pick(held...)
		f := pick(append(held, r)...)
		req := nodes[r]
		peer0 := gathered(req.a.Gatherer(), "shoal_fetched_bytes_total", "source", "peer")
		lsum0, lcnt0 := histogram(req.a.Gatherer(), "shoal_dht_lookup_duration_seconds")
		connected := req.a.Node().Host().Network().Connectedness(nodes[h].a.Node().ID()) == network.Connected
		trace.Logf(ctx, "trial", "%d start", i+1)
		got, err := benchmeasure.Fetch(ctx, client, blobURL(req.url, d), cfg.blobSize)
		trace.Logf(ctx, "trial", "%d end ttfb=%.3f", i+1, msf(got.TTFB))
		if err != nil {
			res.Failures = append(res.Failures, fmt.Sprintf("trial %d (holder %d, requester %d): %v", i+1, h, r, err))
			continue
		}
		lsum1, lcnt1 := histogram(req.a.Gatherer(), "shoal_dht_lookup_duration_seconds")
		peer1 := gathered(req.a.Gatherer(), "shoal_fetched_bytes_total", "source", "peer")
		res.TTFB = append(res.TTFB, msf(got.TTFB))
		if connected {
			res.TTFBConnected = append(res.TTFBConnected, msf(got.TTFB))
		} else {
			res.TTFBNewConn = append(res.TTFBNewConn, msf(got.TTFB))
		}
		res.Total = append(res.Total, msf(got.Total))
		if lcnt1-lcnt0 == 1 {
			res.Lookup = append(res.Lookup, (lsum1-lsum0)*1e3)
			res.Rest = append(res.Rest, msf(got.TTFB)-(lsum1-lsum0)*1e3)
		}
		// Baseline: the same GET answered from a store (the holder's), same client, same moment.
		if hit, err := benchmeasure.Fetch(ctx, client, blobURL(nodes[h].url, d), cfg.blobSize); err == nil {
			res.HitTTFB = append(res.HitTTFB, msf(hit.TTFB))
		}
		if int64(peer1-peer0) == cfg.blobSize {
			res.PeerOK++
		} else {
			res.Notes = append(res.Notes, fmt.Sprintf("trial %d: the requester's shoal_fetched_bytes_total{source=\"peer\"} grew by %d, not %d",
				i+1, int64(peer1-peer0), cfg.blobSize))
		}
		// Who holds d now: the holder, and the requester, which has just fetched and announced it.
		var want []peer.ID // who holds d now: the nodes above and the requester
		for _, k := range append(held, r) {
			want = append(want, nodes[k].a.Node().ID())
		}
		has := func(p peerInfo) bool { return slices.Contains(want, p.ID) }
		fs := time.Now()
		ps, err := nodes[f].a.Node().FindProviders(ctx, digest.Digest(d))
		took := time.Since(fs)
		if err != nil {
			res.Failures = append(res.Failures, fmt.Sprintf("trial %d: FindProviders on node %d: %v", i+1, f, err))
			continue
		}
		res.Find = append(res.Find, msf(took))
		// The DHT client probe: time to the first provider, and to the end of the lookup.
		if first, all, err := pr.Lookup(ctx, digest.Digest(d), want); err == nil && first > 0 {
			res.ProbeFirst = append(res.ProbeFirst, msf(first))
			res.ProbeAll = append(res.ProbeAll, msf(all))
		} else {
			res.Failures = append(res.Failures, fmt.Sprintf("trial %d: probe lookup: first %s, all %s, %v", i+1, first, all, err))
		}
		// The steps of a peer fetch, by hand, from a fourth node that has never looked d up.
		sn := nodes[pick(append(held, r, f)...)]
		if st, err := benchpeerfetch.TimeSteps(ctx, sn.a.Node(), filepath.Join(sn.dir, "tmp"), want, digest.Digest(d)); err == nil {
			res.Steps = append(res.Steps, st)
		} else {
			res.Failures = append(res.Failures, fmt.Sprintf("trial %d: fetch steps: %v", i+1, err))
		}
		if slices.ContainsFunc(ps, has) {
			res.FindHits++
		}
	}
	cpu1, _ := benchproc.CPUTime(os.Getpid())
	gc1 := readGC()
	res.TrialSeconds, res.TrialCPUSeconds = time.Since(t2).Seconds(), (cpu1 - cpu0).Seconds()
	res.GCCycles, res.GCCPUSeconds = gc1.cycles-gc0.cycles, gc1.cpu-gc0.cpu

	res.Refused = o.BlockedRequests()
	col := func(f func(benchpeerfetch.Steps) float64) []float64 {
		out := make([]float64, len(res.Steps))
		for i, x := range res.Steps {
			out[i] = f(x)
		}
		return out
	}
	for _, c := range []struct {
		name string
		f    func(benchpeerfetch.Steps) float64
	}{{"lookup", func(x benchpeerfetch.Steps) float64 { return x.Lookup }}, {"map", func(x benchpeerfetch.Steps) float64 { return x.Map }},
		{"open", func(x benchpeerfetch.Steps) float64 { return x.Open }}, {"chunk", func(x benchpeerfetch.Steps) float64 { return x.Chunk }},
		{"verify", func(x benchpeerfetch.Steps) float64 { return x.Verify }}, {"store", func(x benchpeerfetch.Steps) float64 { return x.Store }}} {
		v := col(c.f)
		logf("dht: step %s p50 %.2f p95 %.2f ms", c.name, benchreport.Percentile(v, 50), benchreport.Percentile(v, 95))
	}
	logf("dht: probe: first provider p50 %.2f p95 %.2f ms; lookup end p50 %.2f p95 %.2f ms",
		benchreport.Percentile(res.ProbeFirst, 50), benchreport.Percentile(res.ProbeFirst, 95), benchreport.Percentile(res.ProbeAll, 50), benchreport.Percentile(res.ProbeAll, 95))
	logf("dht: %d trials: %d fetched from peers, %d failures; TTFB p50 %.1f ms p95 %.1f ms (already connected to the holder: %d, p50 %.1f p95 %.1f; new connection: p50 %.1f p95 %.1f; own lookup p50 %.1f p95 %.1f; store hit p50 %.1f p95 %.1f); FindProviders p50 %.1f ms p95 %.1f ms",
		cfg.trials, res.PeerOK, len(res.Failures), benchreport.Percentile(res.TTFB, 50), benchreport.Percentile(res.TTFB, 95),
		len(res.TTFBConnected), benchreport.Percentile(res.TTFBConnected, 50), benchreport.Percentile(res.TTFBConnected, 95), benchreport.Percentile(res.TTFBNewConn, 50), benchreport.Percentile(res.TTFBNewConn, 95),
		benchreport.Percentile(res.Lookup, 50), benchreport.Percentile(res.Lookup, 95), benchreport.Percentile(res.HitTTFB, 50), benchreport.Percentile(res.HitTTFB, 95), benchreport.Percentile(res.Find, 50), benchreport.Percentile(res.Find, 95))

	runtime.GC()
	runtime.ReadMemStats(&ms)
	res.HeapAfter, res.SysAfter = ms.HeapInuse, ms.Sys
	res.RSSAfter, _ = benchproc.Status(os.Getpid(), "VmRSS")
	res.HWM, _ = benchproc.Status(os.Getpid(), "VmHWM")
	res.Goroutines = runtime.NumGoroutine()
	res.Elapsed = time.Since(began).Seconds()
	return res, nil
}

type peerInfo = peer.AddrInfo

func msf(d time.Duration) float64 { return float64(d) / 1e6 }

// gathered reads a counter or gauge sample with one label from an agent's registry.
func gathered(g prometheus.Gatherer, name, label, value string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if c := m.GetCounter(); c != nil {
						return c.GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// histogram returns a histogram's sample sum and count.
func histogram(g prometheus.Gatherer, name string) (float64, uint64) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleSum(), h.GetSampleCount()
		}
	}
	return 0, 0
}
