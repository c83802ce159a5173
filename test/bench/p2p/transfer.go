package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchlibp2p"
	"github.com/shoal-oci/shoal/test/bench/internal/benchmeasure"
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
	"github.com/shoal-oci/shoal/test/bench/internal/benchreport"
)

// transferResults are scenario 1's measurements, one element per run.
type transferResults struct {
	peer                  []benchmeasure.Result // B's GET through its /v2 API, the bytes coming from A
	tcp, raw              []time.Duration       // baselines on A's stored file
	storeSerial           []time.Duration       // raw libp2p + SHA-256 per 4 MiB + write to a new file, one goroutine
	storePipe             []time.Duration       // the same, reading+hashing and writing in two goroutines
	cpuB, cpuA            []time.Duration       // CPU time (user + system) of B and A during B's GET
	cpuBCommit            []time.Duration       // B's CPU from the GET to its commit (which fsyncs after the last byte)
	cpuClient             []time.Duration       // this process's CPU during B's GET (the HTTP client, mostly)
	cpuTCP, cpuRaw        []time.Duration       // this process's CPU during each baseline (both of its ends)
	commit                []time.Duration       // B: last byte delivered → blob committed
	writeFloor, hashFloor []time.Duration
	writeCPU              []time.Duration // CPU time of the write floor
	peerBytes, originByte []float64       // B's shoal_fetched_bytes_total by source, per run
	servedA               []float64       // A's shoal_peer_served_bytes_total increase, per run
	aPull                 benchmeasure.Result
	originGets            int // origin GETs for the blob while B pulled (must be 0)
	originRefused         int // blob requests the blocked origin refused (must be 0)
	profiles              []string
}

const repo = "bench/p2p"

func blobURL(base, d string) string { return base + "/v2/" + repo + "/blobs/" + d }

// transfer is scenario 1: agent process A holds a blob (pulled through it from the origin), the
// origin is blocked, and for each run a fresh agent process B, bootstrapped to A, GETs the blob
// through its /v2 API, so that it comes from A over libp2p. Baselines in the same run: plain TCP
// io.Copy of A's stored file over loopback, and the same file over one raw libp2p stream between
// two in-process hosts.
func (e *env) transfer(ctx context.Context, d string) error {
	size, res := e.cfg.size, &e.res.tr
	a, err := e.startAgent(ctx, filepath.Join(e.tmp, "agent-a"), true)
	if err != nil {
		return err
	}
	defer func() { _ = a.Stop() }()
	logf("transfer: A (%s) pulls the %s blob from the origin", a.PeerID, benchreport.IBytes(size))
	if res.aPull, err = benchmeasure.Fetch(ctx, e.client, blobURL(a.URL, d), size); err != nil {
		return fmt.Errorf("pull through A: %w\n%s", err, a.Output())
	}
	if _, err := benchproc.WaitCommitted(ctx, a.DataDir, d, size, 2*time.Minute); err != nil {
		return err
	}
	syscall.Sync()
	stored := benchproc.CommittedPath(a.DataDir, d)
	// Blob GETs are refused; HEADs still answer, since B binds the blob's size at the origin
	// before it takes a peer's bytes.
	e.o.BlockGets(true)
	defer e.o.Block(false)
	gets0 := e.o.BlobGets(d)

	floorDir := filepath.Join(e.tmp, "floors")
	if err := os.MkdirAll(floorDir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(floorDir)
	raw, err := benchlibp2p.NewPair(ctx, filepath.Join(e.tmp, "raw-recv"), filepath.Join(e.tmp, "raw-send"), floorDir)
	if err != nil {
		return fmt.Errorf("raw libp2p pair: %w", err)
	}
	defer raw.Close()

	for i := range e.cfg.runs {
		b, err := e.startAgent(ctx, filepath.Join(e.tmp, fmt.Sprintf("agent-b%d", i+1)), true, a.Multiaddr())
		if err != nil {
			return err
		}
		err = benchproc.WaitFor(ctx, 20*time.Second, 10*time.Millisecond, "B joins A", func() bool {
			st, err := b.Status(ctx)
			return err == nil && len(st.ConnectedPeers) > 0 && st.RoutingTableSize > 0
		})
		if err == nil && i == 0 {
			// A starts announcing once it has a peer; its own record is what B's lookup finds.
			err = benchproc.WaitFor(ctx, 20*time.Second, 10*time.Millisecond, "A announces the blob", func() bool {
				v, err := a.Metric(ctx, `shoal_provides_total{result="ok"}`)
				return err == nil && v >= 1
			})
		}
		if err != nil {
			_ = b.Stop()
			return fmt.Errorf("run %d: %w\nA:\n%s\nB:\n%s", i+1, err, a.Output(), b.Output())
		}
		time.Sleep(200 * time.Millisecond)

		var pr benchmeasure.Result
		var cpuA, cpuB, cpuBCommit, cpuClient, cpuTCP, cpuRaw, commit time.Duration
		var peerBytes, originBytes, served float64
		peerRun := func() error {
			served0, _ := a.Metric(ctx, "shoal_peer_served_bytes_total")
			e.prof.StartCPU(ctx, b, fmt.Sprintf("receiver-B-run%d.cpu.pprof", i+1))
			e.prof.StartCPU(ctx, a, fmt.Sprintf("sender-A-run%d.cpu.pprof", i+1))
			a0, _ := benchproc.CPUTime(a.Pid())
			b0, _ := benchproc.CPUTime(b.Pid())
			c0, _ := benchproc.CPUTime(0)
			r, err := benchmeasure.Fetch(ctx, e.client, blobURL(b.URL, d), size)
			c1, _ := benchproc.CPUTime(0)
			cpuClient = c1 - c0
			a1, _ := benchproc.CPUTime(a.Pid())
			b1, _ := benchproc.CPUTime(b.Pid())
			e.prof.StopCPU(b)
			e.prof.StopCPU(a)
			if err != nil {
				return fmt.Errorf("GET through B: %w\nB:\n%s", err, b.Output())
			}
			pr, cpuA, cpuB = r, a1-a0, b1-b0
			if commit, err = benchproc.WaitCommitted(ctx, b.DataDir, d, size, 2*time.Minute); err != nil {
				return err
			}
			b2, _ := benchproc.CPUTime(b.Pid())
			cpuBCommit = b2 - b0
			peerBytes, _ = b.Metric(ctx, `shoal_fetched_bytes_total{source="peer"}`)
			originBytes, _ = b.Metric(ctx, `shoal_fetched_bytes_total{source="origin"}`)
			served1, _ := a.Metric(ctx, "shoal_peer_served_bytes_total")
			served = served1 - served0
			return nil
		}
		var tcp, rawT time.Duration
		baseRun := func() error {
			var err error
			c0, _ := benchproc.CPUTime(0)
			if tcp, err = benchmeasure.TCPCopy(ctx, stored, false); err != nil {
				return fmt.Errorf("TCP baseline: %w", err)
			}
			c1, _ := benchproc.CPUTime(0)
			if rawT, err = raw.Run(ctx, stored, benchlibp2p.Discard); err != nil {
				return fmt.Errorf("raw libp2p baseline: %w", err)
			}
			c2, _ := benchproc.CPUTime(0)
			cpuTCP, cpuRaw = c1-c0, c2-c1
			return nil
		}
		err = benchmeasure.InOrder(i%2 == 1, baseRun, peerRun)
		stopErr := b.Stop()
		_ = os.RemoveAll(b.DataDir)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		if stopErr != nil {
			return stopErr
		}
		// Pages freed a moment ago (B's data directory) are several times cheaper to write into
		// than pages left alone for a few seconds (which this VM hands back to its host); B wrote
		// into the latter, so each measurement that writes waits until the freed ones have gone
		// the same way, and every file written stays until the scenario ends.
		var storeSer, storePipe time.Duration
		time.Sleep(3 * time.Second)
		if storeSer, err = raw.Run(ctx, stored, benchlibp2p.StoreSerial); err != nil {
			return fmt.Errorf("store floor: %w", err)
		}
		time.Sleep(3 * time.Second)
		if storePipe, err = raw.Run(ctx, stored, benchlibp2p.StorePipelined); err != nil {
			return fmt.Errorf("store floor: %w", err)
		}
		time.Sleep(3 * time.Second)
		wf, wcpu, wfile, err := benchmeasure.WriteFloor(floorDir, size, e.pattern)
		if err != nil {
			return err
		}
		hf := benchmeasure.HashFloor(size, e.pattern)
		// The floor file stays until the scenario ends, so that its pages are not handed to the
		// next B.
		_ = wfile

		res.peer = append(res.peer, pr)
		res.tcp = append(res.tcp, tcp)
		res.raw = append(res.raw, rawT)
		res.storeSerial = append(res.storeSerial, storeSer)
		res.storePipe = append(res.storePipe, storePipe)
		res.cpuA = append(res.cpuA, cpuA)
		res.cpuB = append(res.cpuB, cpuB)
		res.cpuBCommit = append(res.cpuBCommit, cpuBCommit)
		res.cpuClient = append(res.cpuClient, cpuClient)
		res.cpuTCP = append(res.cpuTCP, cpuTCP)
		res.cpuRaw = append(res.cpuRaw, cpuRaw)
		res.commit = append(res.commit, commit)
		res.writeFloor = append(res.writeFloor, wf)
		res.writeCPU = append(res.writeCPU, wcpu)
		res.hashFloor = append(res.hashFloor, hf)
		res.peerBytes = append(res.peerBytes, peerBytes)
		res.originByte = append(res.originByte, originBytes)
		res.servedA = append(res.servedA, served)
		logf("transfer run %d: peer %.0f MB/s (TTFB %s, B CPU %s (%s to its commit), A CPU %s; from peer %s, from origin %s); TCP %.0f MB/s; raw libp2p %.0f MB/s; raw libp2p+verify+store %.0f MB/s serial, %.0f MB/s pipelined; write alone %.0f MB/s (CPU %s), SHA-256 alone %.0f MB/s",
			i+1, benchreport.MBps(size, pr.Total), benchreport.Ms(pr.TTFB), benchreport.Secs(cpuB), benchreport.Secs(cpuBCommit), benchreport.Secs(cpuA), benchreport.IBytes(int64(peerBytes)), benchreport.IBytes(int64(originBytes)),
			benchreport.MBps(size, tcp), benchreport.MBps(size, rawT), benchreport.MBps(size, storeSer), benchreport.MBps(size, storePipe), benchreport.MBps(size, wf), benchreport.Secs(wcpu), benchreport.MBps(size, hf))
	}
	res.originGets = e.o.BlobGets(d) - gets0
	res.originRefused = e.o.BlockedRequests()
	return nil
}
