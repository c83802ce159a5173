package main

import (
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchorigin"
	"github.com/shoal-oci/shoal/test/bench/internal/benchplot"
	"github.com/shoal-oci/shoal/test/bench/internal/benchreport"
	"github.com/shoal-oci/shoal/test/bench/internal/benchruntime"
)

// machine is the report's Machine section.
type machine struct {
	benchreport.Machine
	agentBuild string
}

func human(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
func perSec(n int64) string       { return human(n) + "/s" }

// report turns the scenario results into Markdown, SVG and JSON.
type report struct {
	cfg        config
	m          machine
	im         *benchruntime.Image
	imageBytes int64
	results    []*scenarioResult
	lab        string // -netns: the layout of the lab (benchlab)
}

// agg pools the runs of one scenario.
type agg struct {
	name                    string
	runs                    []*scenarioResult
	durs, ttfb, sinceT0     []time.Duration
	originBytes, peerBytes  int64 // summed over runs (agents' own counts)
	originServed            int64 // the origin's own count, summed over runs
	hwm                     []int64
	agentsCPU, benchCPU     time.Duration
	seedCPU                 time.Duration // seeded: the seed process over the pulls
	machineBusy, machineAll int64
	iowait                  int64
	failed, retries         int
	wall                    []time.Duration
}

func (r *report) aggregate(name string) *agg {
	a := &agg{name: name}
	for _, s := range r.results {
		if s.name != name {
			continue
		}
		a.runs = append(a.runs, s)
		for _, n := range s.nodes {
			if n.pull.Err == nil {
				a.durs = append(a.durs, n.pull.Duration())
				a.ttfb = append(a.ttfb, n.pull.FirstLayer)
				a.sinceT0 = append(a.sinceT0, n.pull.End.Sub(s.t0))
			}
			a.retries += n.pull.Retries
			a.originBytes += n.fromOrigin
			a.peerBytes += n.fromPeers
			if n.hwm > 0 {
				a.hwm = append(a.hwm, n.hwm)
			}
		}
		a.originServed += s.origin.Bytes
		a.agentsCPU += s.agentsCPU
		a.benchCPU += s.benchCPU
		if s.seed != nil {
			a.seedCPU += s.seed.cpu
		}
		a.machineBusy += s.machine.Busy
		a.machineAll += s.machine.Total
		a.iowait += s.machine.IOWait
		a.failed += s.failed
		a.wall = append(a.wall, s.wall)
	}
	return a
}

func (r *report) scenarioNames() []string {
	var out []string
	for _, s := range r.cfg.scenarios {
		for _, res := range r.results {
			if res.name == s {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// Bounds, in seconds, from S (the layers), B and the origin's bandwidth.
func (r *report) linkBound() float64 {
	if r.cfg.link <= 0 {
		return 0
	}
	return float64(r.cfg.size) / float64(r.cfg.link)
}

func (r *report) firstCopy() float64 {
	if r.cfg.originRate <= 0 {
		return 0
	}
	return float64(r.cfg.size) / float64(r.cfg.originRate)
}

// bound is the least time any node's pull can take in the scenario: its link (S/B) or the
// origin, which must send at least one copy (S/O), or, with P2P off, N copies (N·S/O). In
// seeded the seed stands in for the origin: it holds the image before the pulls and sends at
// most B, its --max-upload-rate like any node's, so its one copy takes S/B and the bound is
// max(S/B, S/B) = S/B, the same as create's when O ≥ B. (The cluster's whole upload capacity,
// (N+1)·B for the N·S bytes the nodes receive, gives N·S/((N+1)·B) < S/B: the link binds.)
func (r *report) bound(name string) float64 {
	switch name {
	case "origin-only":
		return max(r.linkBound(), float64(r.cfg.nodes)*r.firstCopy())
	case "seeded":
		return r.linkBound()
	}
	return max(r.linkBound(), r.firstCopy())
}

// preheatBound is the least time the seed's preheat can take: one copy from the origin, at the
// slower of its bandwidth and the seed's download link.
func (r *report) preheatBound() float64 {
	return max(r.linkBound(), r.firstCopy())
}

func (r *report) waves() int {
	ws := max(1, int(float64(r.cfg.nodes)*r.cfg.wave+0.999))
	return (r.cfg.nodes + ws - 1) / ws
}

// svgLink is the plot's path relative to the report's directory ("" when there is no plot).
func (r *report) svgLink() string {
	if r.cfg.svg == "" {
		return ""
	}
	rel, err := filepath.Rel(filepath.Dir(filepath.Clean(r.cfg.out)), filepath.Clean(r.cfg.svg))
	if err != nil || r.cfg.out == "" || filepath.IsAbs(r.cfg.out) != filepath.IsAbs(r.cfg.svg) {
		return r.cfg.svg
	}
	return filepath.ToSlash(rel)
}

// analysisMarker starts the hand-written part of the results file, which a rerun keeps.
const analysisMarker = "<!-- analysis: kept by the benchmark when it rewrites this file -->"

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	cfg := r.cfg
	S := float64(cfg.size)
	p("# Benchmarks: image rollout\n\n")
	args := cfg.args
	if args != "" {
		args = " " + args
	}
	p("Generated by `go run ./test/bench/rollout%s` (test/bench/rollout); rerun it rather than editing the numbers. ", args)
	if r.lab == "" {
		p("Everything runs on this one machine over 127.0.0.1: %d `shoal agent` processes, an origin registry in the benchmark process, and %d simulated container runtimes (one per node). ", cfg.nodes, cfg.nodes)
	} else {
		p("Everything runs on this one machine, over shaped links between network namespaces (below): %d `shoal agent` processes, an origin registry, and one client per node. ", cfg.nodes)
	}
	if slices.Contains(r.scenarioNames(), "origin-only") {
		p("P2P is compared with the `origin-only` baseline (`--p2p=false`) measured in the same run. ")
	}
	if plot := r.svgLink(); plot != "" {
		p("The plot of the pull times is [%s](%s).", filepath.Base(plot), plot)
	}
	p("\n\n")
	p("**Setup:** N = %d nodes; image S = %s in %d layers (+ a %d-byte config), random bytes; each node's link B = %s (`--max-upload-rate` and `--max-download-rate`); origin bandwidth O = %s for all its responses together; runs: %d.",
		cfg.nodes, human(cfg.size), cfg.layers, r.im.Config.Size, perSec(cfg.link), perSec(cfg.originRate), cfg.runs)
	seeded := slices.Contains(r.scenarioNames(), "seeded")
	if seeded {
		p(" `seeded` adds one `shoal seed` process with the same link as an agent: `--max-upload-rate` and `--max-download-rate` B = %s.", perSec(cfg.link))
	}
	p("\n\n")
	if r.lab != "" {
		p("**Over real links (`-netns %s`), not 127.0.0.1:** %s. The agents have no `--max-upload-rate` or `--max-download-rate` (unlike the Method below says), `--p2p-listen` is the node's address on the bridge and `--registry` the origin's, and the origin paces nothing itself: B and O are the links'. With `ctr` a pull is the process's time and no TTFB is measured (0 in the tables), nor what the runtimes received.\n\n", r.cfg.netns, r.lab)
	}
	p("**Bounds:** line rate S/B = %.1f s; first copy from the origin S/O = %.1f s; N copies from the origin N·S/O = %.1f s. ",
		r.linkBound(), r.firstCopy(), float64(cfg.nodes)*r.firstCopy())
	p("The bound of a pull is max(S/B, S/O) = %.1f s with P2P (a node cannot receive faster than its link, nor before the origin has sent one copy), and max(S/B, N·S/O) = %.1f s for origin-only.",
		r.bound("create"), r.bound("origin-only"))
	if seeded {
		cmp := "<"
		if cfg.originRate == 0 || cfg.originRate >= cfg.link {
			cmp = "≥"
		}
		p(" In `seeded` the preheated seed plays the origin's part with a node's uplink B: it must send one copy at most at B, so the bound is max(S/B, S/B) = S/B = %.1f s, which is create's when O ≥ B (here O %s B); the cluster's whole upload capacity, (N+1)·B for the N·S bytes received, allows N·S/((N+1)·B) = %.1f s, less than S/B, so the link binds. The preheat itself is bound by max(S/B, S/O) = %.1f s (one copy from the origin over the seed's download link).",
			r.bound("seeded"), cmp,
			float64(cfg.nodes)*S/(float64(cfg.nodes+1)*float64(max(cfg.link, 1))), r.preheatBound())
	}
	p("\n\n")

	names := r.scenarioNames()
	aggs := map[string]*agg{}
	for _, n := range names {
		aggs[n] = r.aggregate(n)
	}
	base := aggs["origin-only"]

	p("| Scenario | Pulls ok | p50 | p95 | p99 | max | bound | max ÷ bound | p50 vs origin-only p50 | first layer TTFB p50 / p95 / max | TTFB ≤ 1 s | last node done (from first ask) |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n")
	for _, n := range names {
		a := aggs[n]
		bd := r.bound(n)
		vs := "—"
		if base != nil && n != "origin-only" && len(base.durs) > 0 {
			vs = fmt.Sprintf("%.2f×", benchreport.Percentile(a.durs, 50).Seconds()/benchreport.Percentile(base.durs, 50).Seconds())
		}
		within := 0
		for _, t := range a.ttfb {
			if t <= time.Second {
				within++
			}
		}
		p("| %s | %d / %d | %s | %s | %s | %s | %.1f s | %.1f× | %s | %s / %s / %s | %d of %d | %s |\n", n,
			len(a.durs), len(a.runs)*cfg.nodes,
			secs(benchreport.Percentile(a.durs, 50)), secs(benchreport.Percentile(a.durs, 95)), secs(benchreport.Percentile(a.durs, 99)), secs(benchreport.Percentile(a.durs, 100)),
			bd, benchreport.Percentile(a.durs, 100).Seconds()/bd, vs,
			secs(benchreport.Percentile(a.ttfb, 50)), secs(benchreport.Percentile(a.ttfb, 95)), secs(benchreport.Percentile(a.ttfb, 100)), within, len(a.ttfb),
			secs(benchreport.Median(a.wall)))
	}
	p("\n| Scenario | origin bytes ÷ S | origin blob GETs (Range) | agents' bytes from origin / from peers | peak RSS per agent, median / max | CPU s, all agents | CPU s, benchmark process | agents (+ seed) + benchmark, share of the %d cores | machine CPU busy (all processes) | iowait |\n", r.m.NProc)
	p("|---|---:|---:|---|---|---:|---:|---:|---:|---:|\n")
	for _, n := range names {
		a := aggs[n]
		gets, ranges := 0, 0
		for _, s := range a.runs {
			for _, v := range s.origin.BlobGets {
				gets += v
			}
			ranges += s.origin.RangeGets
		}
		runs := float64(len(a.runs))
		var window time.Duration
		for _, s := range a.runs {
			window += s.window
		}
		share := (a.agentsCPU + a.seedCPU + a.benchCPU).Seconds() / (window.Seconds() * float64(r.m.NProc))
		p("| %s | %.2f | %.0f (%.0f) | %s / %s | %s / %s | %.1f | %.1f | %.0f%% | %.0f%% | %.0f%% |\n", n,
			float64(a.originServed)/S/runs, float64(gets)/runs, float64(ranges)/runs,
			human(int64(float64(a.originBytes)/runs)), human(int64(float64(a.peerBytes)/runs)),
			benchreport.MiB(benchreport.Median(a.hwm)), benchreport.MiB(slices.Max(append([]int64{0}, a.hwm...))),
			a.agentsCPU.Seconds()/runs, a.benchCPU.Seconds()/runs, 100*share,
			100*float64(a.machineBusy)/float64(max(a.machineAll, 1)), 100*float64(a.iowait)/float64(max(a.machineAll, 1)))
	}
	p("\n| Scenario | origin requests | blob GETs | blob HEADs | manifest GETs | manifest HEADs | other (tag lists, /v2/) | 401 answers | HEADs + 401s per node | agents' origin requests (their count) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range names {
		q, agentReqs, runs := aggs[n].requests()
		p("| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.1f |\n", n, float64(q.Total())/runs, float64(q.BlobGets)/runs, float64(q.BlobHeads)/runs,
			float64(q.ManifestGets)/runs, float64(q.ManifestHeads)/runs, float64(q.Other)/runs, float64(q.Unauthorized)/runs,
			float64(q.BlobHeads+q.ManifestHeads+q.Unauthorized)/runs/float64(cfg.nodes), float64(agentReqs)/runs)
	}
	p("\nOrigin requests are per run, counted by the origin during the pulls (a request refused for its credential counts only as a 401)")
	if cfg.runs > 1 {
		p(", averaged over the %d runs", cfg.runs)
	}
	p(".\n")
	p("\nTimes are per node, from the manifest request to the last byte of its last blob (nearest-rank percentiles over the successful pulls")
	if cfg.runs > 1 {
		p(" of all %d runs", cfg.runs)
	}
	p("). The first layer's TTFB is from sending that layer's GET to its first body byte (target: within 1 s). Origin bytes are every response body byte the origin sent (blobs and manifests). CPU and machine figures cover the scenario from the first pull to the moment every agent had committed everything; the machine's figure includes whatever else ran on it. MB is 10⁶ bytes, MiB 2²⁰.\n\n")

	// Per-scenario details.
	for _, n := range names {
		a := aggs[n]
		p("## %s\n\n", n)
		switch n {
		case "create":
			p("All %d nodes ask for the image at the same instant.\n\n", cfg.nodes)
		case "update":
			p("Waves of %d nodes (%.0f%%), each starting when the previous one has finished; %d waves. A node's pull time counts from its own start; the last column of the first table counts from the first wave's start (ideal: %d × %.1f s = %.1f s).\n\n",
				a.runs[0].waveSize, cfg.wave*100, r.waves(), r.waves(), r.bound("update"), float64(r.waves())*r.bound("update"))
		case "origin-only":
			p("The same simultaneous pulls as `create`, with `--p2p=false` on every agent.\n\n")
		case "create-private":
			p("`create` with a private image: the origin answers every request without a known credential (HTTP Basic) with 401 and `WWW-Authenticate: Basic`, the agents have no credentials of their own, and every runtime sends its node's credential (%d distinct among the %d nodes: node i uses user i mod %d) on every request, as containerd does after the challenge.\n\n", cfg.users, cfg.nodes, cfg.users)
		case "seeded":
			p("`create` with a seed: one `shoal seed` process (link B, like an agent) starts first and all %d agents bootstrap from it; once they have joined, `shoal preheat` has the seed fetch the image from the origin; then the origin is stopped (its listener closed: every request to it is refused at once) and all %d nodes ask for the image at the same instant, by tag, as in `create`. A node can get the tag only from the cluster's last resolution (the seed's) and the bytes only from the seed and its peers. Every pull is checked as in the other scenarios: the manifest by tag must be the pushed one and every blob's size and SHA-256 must match.\n\n", cfg.nodes, cfg.nodes)
		}
		for _, s := range a.runs {
			r.runDetails(&b, s)
		}
	}

	p("## Method\n\n")
	p("- Agent: `shoal agent` built from %s, one process per node, each with a fresh data directory per scenario run: `--listen 127.0.0.1:<port> --data-dir <dir> --registry <origin> --log-level %s --max-upload-rate %d --max-download-rate %d%s`, and with P2P `--p2p-listen /ip4/127.0.0.1/tcp/<port>` plus, for every node but node 0, `--bootstrap <node 0's multiaddr>/p2p/<id>`; origin-only uses `--p2p=false`. ", r.m.agentBuild, cfg.agentLog, cfg.link, cfg.link, strings.TrimRight(" "+strings.Join(cfg.agentArgs, " "), " "))
	p("Before the pulls the benchmark waits until every agent reports a connected peer in /shoal/v1/status (and, for up to 10 s, a routing table of min(N−1, 8)), then 1 s more, then measures the agents' idle CPU over 3 s.\n")
	if seeded {
		p("- Seed (`seeded`): `shoal seed` built from the same revision, with the agents' flags (`--max-upload-rate %d --max-download-rate %d`, `--p2p-listen`, `--registry <origin>`, no `--bootstrap`) and `--seed-authority-key` (a seed authority the benchmark creates); every agent gets `--bootstrap <the seed's multiaddr>/p2p/<id>` and `--seed-authority <its public key>`, so that the agents take it as a seed. The preheat is the operator's command, `shoal preheat --seed 127.0.0.1:<port> 127.0.0.1:<origin port>/%s:%s`, run once every agent has joined; the origin is then stopped by closing its listener (`http.Server.Shutdown`), and started again on a new port after the scenario.\n", cfg.link, cfg.link, benchruntime.Repository, benchruntime.Tag)
	}
	if r.lab == "" { // else described above
		p("- Origin: go-containerregistry's registry in the benchmark process, blobs served from files; every response body goes through one shared token bucket (golang.org/x/time/rate, %s, 64 KiB at a time), and its bytes are counted.\n", perSec(cfg.originRate))
	}
	p("- Image: %d layers of random bytes (%s in all) pre-generated to files, a config, and an OCI image manifest pushed as %s:%s.\n", cfg.layers, human(cfg.size), benchruntime.Repository, benchruntime.Tag)
	p("- A pull, per node, is what a runtime does: GET the manifest by tag through the node's /v2 API (`Accept: %s`), check it is the pushed one, then GET the config and every layer through the node, %d at a time in manifest order, each checked for size and SHA-256; a failed blob is asked again (up to 3 attempts; retries are counted). Each node has its own HTTP client and connections.\n", benchruntime.ManifestType, cfg.parallel)
	p("- Measured per node: pull time, the first layer's TTFB, the agent's shoal_fetched_bytes_total{source} and shoal_peer_served_bytes_total, VmHWM (/proc/PID/status), and utime+stime (/proc/PID/stat) over the scenario; the machine's CPU from /proc/stat over the same window.\n\n")

	p("## Machine\n\n")
	p("- Agents built from %s\n", r.m.agentBuild)
	p("%s", r.m.Markdown("scenarios of the same run, not across runs"))
	return b.String()
}

// svg is the CDF of the per-node pull times of every scenario (all runs pooled): one step line
// per scenario, the update's completion times since the rollout began as a dashed line, and the
// bounds as vertical dotted lines.
func (r *report) svg() string {
	colors := map[string]string{"create": "#1f77b4", "update": "#2ca02c", "origin-only": "#d62728", "seeded": "#9467bd", "create-private": "#ff7f0e"}
	plot := benchplot.CDF{
		Title: fmt.Sprintf("Per-node pull time, CDF: N=%d, S=%s in %d layers, B=%s, origin %s",
			r.cfg.nodes, human(r.cfg.size), r.cfg.layers, perSec(r.cfg.link), perSec(r.cfg.originRate)),
		YLabel: "fraction of nodes done", Unit: "nodes",
		Bounds: []benchplot.Bound{{Label: "max(S/B, S/O)", Seconds: r.bound("create")}},
	}
	for _, n := range r.scenarioNames() {
		a := r.aggregate(n)
		// The baseline is drawn wide and first, so that a P2P line on top of it stays visible.
		plot.Series = append(plot.Series, benchplot.Series{Label: n + " (pull time)", Color: colors[n], Wide: n == "origin-only", Values: a.durs})
		if n == "update" {
			plot.Series = append(plot.Series, benchplot.Series{Label: "update (time from the first wave's start to done)", Color: colors[n], Dash: "6 4", Values: a.sinceT0})
		}
		if n == "origin-only" {
			plot.Bounds = append(plot.Bounds, benchplot.Bound{Label: "N·S/O", Seconds: r.bound("origin-only")})
		}
	}
	return plot.SVG()
}

// runDetails writes one scenario run: waves, timeline, per-node figures, agent logs.
func (r *report) runDetails(b *strings.Builder, s *scenarioResult) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	S := float64(r.cfg.size)
	if r.cfg.runs > 1 {
		p("**Run %d.** ", s.run)
	}
	p("Agents started and joined in %s", secs(s.startup))
	if s.p2p {
		p(" (smallest routing table %d)", s.rtMin)
	}
	p(". ")
	if sd := s.seed; sd != nil {
		o := sd.preheatOrigin
		p("**Preheat:** `shoal preheat --seed <seed> %s` took %s (the manifest resolved after %s; bound %.1f s); the origin served %s (%.2f× S) in %d blob GETs (%d with Range) and %d manifest requests. ",
			sd.ref, secs(sd.preheat), secs(sd.resolved), r.preheatBound(), human(o.Bytes), float64(o.Bytes)/S, sumGets(o.BlobGets), o.RangeGets, o.Manifests)
		if sd.refused {
			p("Then the origin was stopped: a new connection to it was refused. ")
		} else {
			p("Then the origin was stopped: a new connection to it failed (but not with \"connection refused\"). ")
		}
		var reqs, errs, stale int64
		staleNodes := 0
		for _, n := range s.nodes {
			reqs += n.originReqs
			errs += n.originErr
			stale += n.staleTags
			if n.staleTags > 0 {
				staleNodes++
			}
		}
		p("During the pulls the agents tried the origin %d times (%d failed) and %d of %d agents answered the tag themselves from the cluster's last resolution (%d stale resolutions); the seed, the tag's coordinator if the agents asked it, answered from its own last resolution %d times (its origin requests in all, the preheat's included: %d, %d failed). ",
			reqs, errs, staleNodes, len(s.nodes), stale, sd.staleTags, sd.originReqs, sd.originErr)
		p("The seed served %s to peers (%.2f× S), fetched %s from the origin in all (the preheat), used %.1f CPU s over the pulls and peaked at %s (VmHWM)",
			human(sd.servedPeers), float64(sd.servedPeers)/S, human(sd.fromOrigin), sd.cpu.Seconds(), benchreport.MiB(sd.hwm))
		if sd.exitErr != "" {
			p("; **%s**", sd.exitErr)
		}
		p(".\n\n")
	}
	p("Last byte %s after the first ask; every agent had committed everything %s later. ", secs(s.wall), secs(s.commitLag))
	q := s.origin.Requests
	p("The origin served %s (%.2f× S) in %d blob GETs (%d with Range), %d manifest GETs, %d manifest HEADs, %d blob HEADs, %d other requests and %d 401 answers", human(s.origin.Bytes), float64(s.origin.Bytes)/S, sumGets(s.origin.BlobGets), s.origin.RangeGets, q.ManifestGets, q.ManifestHeads, q.BlobHeads, q.Other, q.Unauthorized)
	var layerGets []string
	for i, l := range r.im.Layers {
		layerGets = append(layerGets, fmt.Sprintf("layer %d: %d", i+1, s.origin.BlobGets[l.Digest]))
	}
	p(" (%s; config: %d).", strings.Join(layerGets, ", "), s.origin.BlobGets[r.im.Config.Digest])
	busy, peak := s.timeline.Busy(0, r.cfg.originRate, 0.9), s.timeline.Peak(1)
	p(" Origin egress at ≥ 90%% of O for %s of the %s; peak aggregate rate to the runtimes %s (1 s windows).", secs(busy), secs(s.wall), perSec(peak))
	p(" The agents used %.1f CPU s (%.0f%% user, %.0f%% system); while idle before the pulls (joined, nothing asked) they used %.2f CPU s in %s, %.1f%% of a core per agent.",
		s.agentsCPU.Seconds(), 100*s.agentsUser.Seconds()/max(s.agentsCPU.Seconds(), 0.01), 100-100*s.agentsUser.Seconds()/max(s.agentsCPU.Seconds(), 0.01),
		s.idleCPU.Seconds(), secs(s.idleWindow), 100*s.idleCPU.Seconds()/s.idleWindow.Seconds()/float64(len(s.nodes)))
	if s.failed > 0 {
		p(" **%d pulls failed.**", s.failed)
	}
	p("\n\n")

	p("%s", s.timeline.Table("from the first ask (s)", []string{"origin egress, MB/s", "runtimes receive, MB/s"}, s.wall))
	if sd := s.seed; sd != nil && sd.preheatOut != "" {
		p("<details><summary>shoal preheat output (seconds since it started)</summary>\n\n```\n%s```\n\n</details>\n\n", sd.preheatOut)
	}
	if s.waveSize < len(s.nodes) {
		p("| Wave | nodes | p50 | max | from origin | from peers | first layer TTFB max |\n|---:|---|---:|---:|---:|---:|---:|\n")
		for w := 0; w*s.waveSize < len(s.nodes); w++ {
			lo, hi := w*s.waveSize, min((w+1)*s.waveSize, len(s.nodes))
			var d, t []time.Duration
			var fo, fp int64
			for _, n := range s.nodes[lo:hi] {
				if n.pull.Err == nil {
					d = append(d, n.pull.Duration())
					t = append(t, n.pull.FirstLayer)
				}
				fo += n.fromOrigin
				fp += n.fromPeers
			}
			p("| %d | %d–%d | %s | %s | %s | %s | %s |\n", w+1, lo, hi-1, secs(benchreport.Percentile(d, 50)), secs(benchreport.Percentile(d, 100)), human(fo), human(fp), secs(benchreport.Percentile(t, 100)))
		}
		p("\n")
	}

	p("<details><summary>Per node</summary>\n\n")
	p("| node | start | pull time | manifest | first layer TTFB | from origin | from peers | served to peers | VmHWM | CPU s | retries | note |\n")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	order := make([]int, len(s.nodes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return s.nodes[order[i]].pull.End.Before(s.nodes[order[j]].pull.End) })
	for _, i := range order {
		n := s.nodes[i]
		note := n.exitErr
		if n.pull.Err != nil {
			note = strings.TrimSpace(note + " pull failed: " + firstLine(n.pull.Err.Error()))
		}
		note = strings.ReplaceAll(note, "|", "\\|")
		p("| %d | %s | %s | %.3f s | %.3f s | %s | %s | %s | %s | %.2f | %d | %s |\n", i,
			secs(n.pull.Start.Sub(s.t0)), secs(n.pull.Duration()), n.pull.Manifest.Seconds(), n.pull.FirstLayer.Seconds(),
			human(n.fromOrigin), human(n.fromPeers), human(n.servedPeers), benchreport.MiB(n.hwm), n.cpu.Seconds(), n.pull.Retries, note)
	}
	p("\n</details>\n\n")

	if len(s.logs) == 0 {
		p("The agents logged no WARN or ERROR lines.\n\n")
		return
	}
	p("Agent WARN/ERROR lines (level and message; count; processes; one example):\n\n")
	for i, l := range s.logs {
		if i == 12 {
			p("- … %d more kinds\n", len(s.logs)-12)
			break
		}
		ex := l.Example
		if len(ex) > 400 {
			ex = ex[:400] + "…"
		}
		p("- `%s`: %d lines from %s, e.g. `%s`\n", l.Key, l.Count, procCount(l.Procs), strings.ReplaceAll(ex, "`", "'"))
	}
	p("\n")
}

// procCount says how many processes logged a line: "7 agents", "the seed", "3 agents and the seed".
func procCount(procs map[string]bool) string {
	n := len(procs)
	seed := procs["seed"]
	if seed {
		n--
	}
	agents := fmt.Sprintf("%d agents", n)
	if n == 1 {
		agents = "1 agent"
	}
	switch {
	case seed && n == 0:
		return "the seed"
	case seed:
		return agents + " and the seed"
	}
	return agents
}

// requests are the origin's requests by kind and the agents' own count of theirs, summed over
// the runs, and the number of runs.
func (a *agg) requests() (q benchorigin.Requests, agentReqs int64, runs float64) {
	for _, s := range a.runs {
		q = q.Add(s.origin.Requests)
		for _, n := range s.nodes {
			agentReqs += n.originReqs
		}
	}
	return q, agentReqs, float64(max(len(a.runs), 1))
}

func sumGets(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

type jsonScenario struct {
	Scenario        string               `json:"scenario"`
	Runs            int                  `json:"runs"`
	PullsOK         int                  `json:"pulls_ok"`
	PullsFailed     int                  `json:"pulls_failed"`
	OriginBytes     int64                `json:"origin_bytes"`
	OriginOverImage float64              `json:"origin_bytes_over_image"`
	BoundSeconds    float64              `json:"bound_seconds"`
	P50             float64              `json:"p50_seconds"`
	P95             float64              `json:"p95_seconds"`
	P99             float64              `json:"p99_seconds"`
	Max             float64              `json:"max_seconds"`
	LastDone        float64              `json:"last_node_done_seconds"`
	TTFBP50         float64              `json:"first_layer_ttfb_p50_seconds"`
	TTFBMax         float64              `json:"first_layer_ttfb_max_seconds"`
	TTFBWithin1s    int                  `json:"first_layer_ttfb_within_1s"`
	PeakRSSMedian   int64                `json:"peak_rss_median_bytes"`
	PeakRSSMax      int64                `json:"peak_rss_max_bytes"`
	AgentsCPU       float64              `json:"agents_cpu_seconds"`
	BenchCPU        float64              `json:"bench_cpu_seconds"`
	FromPeers       int64                `json:"agents_bytes_from_peers"`
	OriginRequests  benchorigin.Requests `json:"origin_requests_all_runs"`
	// seeded only: the median preheat, what the origin served during it, and the seed's uploads.
	PreheatSeconds     *float64 `json:"preheat_seconds,omitempty"`
	PreheatOriginBytes *int64   `json:"preheat_origin_bytes,omitempty"`
	SeedServedBytes    *int64   `json:"seed_served_bytes,omitempty"`
	StaleTags          *int64   `json:"stale_tag_resolutions,omitempty"`
}

func (r *report) scenarioJSON(name string) jsonScenario {
	a := r.aggregate(name)
	runs := max(len(a.runs), 1)
	q, _, _ := a.requests()
	within := 0
	for _, t := range a.ttfb {
		if t <= time.Second {
			within++
		}
	}
	return jsonScenario{
		Scenario: name, Runs: len(a.runs), PullsOK: len(a.durs), PullsFailed: a.failed,
		OriginBytes: a.originServed / int64(runs), OriginOverImage: round3(float64(a.originServed) / float64(runs) / float64(r.cfg.size)),
		BoundSeconds: round3(r.bound(name)),
		P50:          round3(benchreport.Percentile(a.durs, 50).Seconds()), P95: round3(benchreport.Percentile(a.durs, 95).Seconds()),
		P99: round3(benchreport.Percentile(a.durs, 99).Seconds()), Max: round3(benchreport.Percentile(a.durs, 100).Seconds()),
		LastDone: round3(benchreport.Median(a.wall).Seconds()),
		TTFBP50:  round3(benchreport.Percentile(a.ttfb, 50).Seconds()), TTFBMax: round3(benchreport.Percentile(a.ttfb, 100).Seconds()), TTFBWithin1s: within,
		PeakRSSMedian: benchreport.Median(a.hwm), PeakRSSMax: slices.Max(append([]int64{0}, a.hwm...)),
		AgentsCPU: round3(a.agentsCPU.Seconds() / float64(runs)), BenchCPU: round3(a.benchCPU.Seconds() / float64(runs)),
		FromPeers: a.peerBytes / int64(runs), OriginRequests: q,
	}.withSeed(a)
}

// withSeed adds the seeded figures when the scenario had a seed.
func (j jsonScenario) withSeed(a *agg) jsonScenario {
	var pre []time.Duration
	var origin, served, stale int64
	for _, s := range a.runs {
		if s.seed == nil {
			continue
		}
		pre = append(pre, s.seed.preheat)
		origin += s.seed.preheatOrigin.Bytes
		served += s.seed.servedPeers
		for _, n := range s.nodes {
			stale += n.staleTags
		}
	}
	if len(pre) == 0 {
		return j
	}
	k := int64(len(pre))
	p := round3(benchreport.Median(pre).Seconds())
	origin, served, stale = origin/k, served/k, stale/k
	j.PreheatSeconds, j.PreheatOriginBytes, j.SeedServedBytes, j.StaleTags = &p, &origin, &served, &stale
	return j
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// headline is the last line's JSON object.
type headline struct {
	Scenario             string         `json:"scenario"`
	Nodes                int            `json:"nodes"`
	ImageBytes           int64          `json:"image_bytes"`
	Layers               int            `json:"layers"`
	LinkRate             int64          `json:"link_bytes_per_second"`
	OriginRate           int64          `json:"origin_bytes_per_second"`
	Runs                 int            `json:"runs"`
	OriginBytes          int64          `json:"origin_bytes"`
	OriginOverImage      float64        `json:"origin_bytes_over_image"`
	BoundSeconds         float64        `json:"bound_seconds"`
	LineRateSeconds      float64        `json:"line_rate_seconds"`
	FirstCopySeconds     float64        `json:"first_copy_seconds"`
	P50                  float64        `json:"p50_seconds"`
	P95                  float64        `json:"p95_seconds"`
	P99                  float64        `json:"p99_seconds"`
	Max                  float64        `json:"max_seconds"`
	TTFBP50              float64        `json:"first_layer_ttfb_p50_seconds"`
	TTFBMax              float64        `json:"first_layer_ttfb_max_seconds"`
	PullsFailed          int            `json:"pulls_failed"`
	OriginOnlyP50        *float64       `json:"origin_only_p50_seconds"`
	OriginOnlyMax        *float64       `json:"origin_only_max_seconds,omitempty"`
	OriginOnlyOriginByte *int64         `json:"origin_only_origin_bytes,omitempty"`
	Scenarios            []jsonScenario `json:"scenarios"`
}

// json is the last line: the headline scenario (create, else the first that ran) with the
// origin-only p50 beside it, and every scenario under "scenarios".
func (r *report) json() string {
	names := r.scenarioNames()
	head := names[0]
	if slices.Contains(names, "create") {
		head = "create"
	}
	h := r.scenarioJSON(head)
	out := headline{
		Scenario: h.Scenario, Nodes: r.cfg.nodes, ImageBytes: r.cfg.size, Layers: r.cfg.layers,
		LinkRate: r.cfg.link, OriginRate: r.cfg.originRate, Runs: r.cfg.runs,
		OriginBytes: h.OriginBytes, OriginOverImage: h.OriginOverImage,
		BoundSeconds: h.BoundSeconds, LineRateSeconds: round3(r.linkBound()), FirstCopySeconds: round3(r.firstCopy()),
		P50: h.P50, P95: h.P95, P99: h.P99, Max: h.Max,
		TTFBP50: h.TTFBP50, TTFBMax: h.TTFBMax, PullsFailed: h.PullsFailed,
	}
	if slices.Contains(names, "origin-only") {
		b := r.scenarioJSON("origin-only")
		out.OriginOnlyP50, out.OriginOnlyMax, out.OriginOnlyOriginByte = &b.P50, &b.Max, &b.OriginBytes
	}
	for _, n := range names {
		out.Scenarios = append(out.Scenarios, r.scenarioJSON(n))
	}
	j, _ := json.Marshal(out)
	return string(j)
}
