package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchmeasure"
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
	"github.com/shoal-oci/shoal/test/bench/internal/benchreport"
)

// procResults are scenario 3b's measurements: N agent processes in one cluster.
type procResults struct {
	n          int
	joinTime   time.Duration
	rtMin      int
	idleRSS    []int64 // VmRSS of each agent once the cluster has formed
	rss, hwm   []int64 // VmRSS and VmHWM of each agent after every agent pulled the blob
	peerPulls  int     // agents (of n-1) that got the blob from peers
	pullSize   int64
	originGets int
	notes      []string // agents whose metrics did not show the blob coming from peers
}

// procs is scenario 3b: n separate agent processes, all but the first bootstrapped to the
// first; once their routing tables have formed, a blob is pulled through every agent in turn (the
// first from the origin, the others from their peers), then each agent's VmRSS and VmHWM are read.
func (e *env) procs(ctx context.Context, d string) error {
	n, res := e.cfg.procs, &e.res.pr
	res.n, res.pullSize = n, e.cfg.procBlob
	agents := make([]*benchproc.Shoal, n)
	defer func() {
		for _, a := range agents {
			if a != nil {
				_ = a.Stop()
			}
		}
	}()
	t0 := time.Now()
	var err error
	if agents[0], err = e.startAgent(ctx, filepath.Join(e.tmp, "proc00"), false); err != nil {
		return err
	}
	boot := []string{agents[0].Multiaddr()}
	var wg sync.WaitGroup
	errs := make([]error, n)
	sem := make(chan struct{}, 4)
	for i := 1; i < n; i++ {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			agents[i], errs[i] = e.startAgent(ctx, filepath.Join(e.tmp, fmt.Sprintf("proc%02d", i)), false, boot...)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	target := min(n-1, 10)
	rtMin := func() int {
		m := n
		for _, a := range agents {
			st, err := a.Status(ctx)
			if err != nil {
				return 0
			}
			m = min(m, st.RoutingTableSize)
		}
		return m
	}
	if err := benchproc.WaitFor(ctx, 60*time.Second, 10*time.Millisecond, "process cluster routing tables", func() bool { return rtMin() >= target }); err != nil {
		logf("procs: %v; going on", err)
	}
	res.joinTime = time.Since(t0)
	res.rtMin = rtMin()
	time.Sleep(time.Second) // let start-up work (first provides, identify) settle
	for _, a := range agents {
		v, err := benchproc.Status(a.Pid(), "VmRSS")
		if err != nil {
			return err
		}
		res.idleRSS = append(res.idleRSS, v)
	}
	logf("procs: %d agent processes joined in %s (smallest routing table %d); median VmRSS %s",
		n, benchreport.Secs(res.joinTime), res.rtMin, benchreport.MiB(benchreport.Median(res.idleRSS)))

	gets0 := e.o.BlobGets(d)
	provides0, err := agents[0].Metric(ctx, `shoal_provides_total{result="ok"}`)
	if err != nil {
		return err
	}
	for i, a := range agents {
		if _, err := os.Stat(benchproc.CommittedPath(a.DataDir, d)); err == nil {
			res.notes = append(res.notes, fmt.Sprintf("agent %d held the blob already (fetched from the origin for the cluster)", i))
			continue
		}
		if _, err := benchmeasure.Fetch(ctx, e.client, blobURL(a.URL, d), e.cfg.procBlob); err != nil {
			return fmt.Errorf("procs: pull through agent %d: %w\n%s", i, err, a.Output())
		}
		if _, err := benchproc.WaitCommitted(ctx, a.DataDir, d, e.cfg.procBlob, time.Minute); err != nil {
			return err
		}
		if i > 0 {
			// Each pull through an agent must be answered by its peers.
			v, _ := a.Metric(ctx, `shoal_fetched_bytes_total{source="peer"}`)
			o, _ := a.Metric(ctx, `shoal_fetched_bytes_total{source="origin"}`)
			if int64(v) == e.cfg.procBlob && o == 0 {
				res.peerPulls++
			} else {
				res.notes = append(res.notes, fmt.Sprintf("agent %d: fetched_bytes peer %d, origin %d", i, int64(v), int64(o)))
			}
		} else {
			// Give the others a provider to find: wait until the first agent has sent its
			// provider records.
			err := benchproc.WaitFor(ctx, 20*time.Second, 10*time.Millisecond, "first agent announces the blob", func() bool {
				v, err := a.Metric(ctx, `shoal_provides_total{result="ok"}`)
				return err == nil && v > provides0
			})
			if err != nil {
				return err
			}
		}
	}
	res.originGets = e.o.BlobGets(d) - gets0
	for _, a := range agents {
		rss, err1 := benchproc.Status(a.Pid(), "VmRSS")
		hwm, err2 := benchproc.Status(a.Pid(), "VmHWM")
		if err := firstErr(err1, err2); err != nil {
			return err
		}
		res.rss = append(res.rss, rss)
		res.hwm = append(res.hwm, hwm)
	}
	logf("procs: blob pulled through all %d (%d of %d from peers, origin GETs %d); VmHWM median %s, max %s",
		n, res.peerPulls, n-1, res.originGets, benchreport.MiB(benchreport.Median(res.hwm)), benchreport.MiB(slices.Max(res.hwm)))
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
