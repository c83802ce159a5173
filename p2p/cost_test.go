//go:build unix

package p2p

import (
	"context"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p-kad-dht/provider"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

type countingRouter struct {
	provider.KadClosestPeersRouter
	calls *atomic.Int64
}

func (r countingRouter) GetClosestPeers(ctx context.Context, key string) ([]peer.ID, error) {
	r.calls.Add(1)
	return r.KadClosestPeersRouter.GetClosestPeers(ctx, key)
}

// TestReprovideCost measures what advertising many digests costs: peer lookups, provider records sent,
// wall time and CPU (all nodes run in this process, so CPU counts both ends). It is a measurement, not a
// check, and runs only with SHOAL_P2P_COST=1 (SHOAL_P2P_COST_NODES, SHOAL_P2P_COST_KEYS to size it):
//
//	SHOAL_P2P_COST=1 go test ./p2p -run TestReprovideCost -v
func TestReprovideCost(t *testing.T) {
	if os.Getenv("SHOAL_P2P_COST") == "" {
		t.Skip("measurement; set SHOAL_P2P_COST=1")
	}
	size, keys := envInt("SHOAL_P2P_COST_NODES", 5), envInt("SHOAL_P2P_COST_KEYS", 10000)
	nodes := cluster(t, size, Config{})
	n := nodes[size-1]
	var lookups atomic.Int64
	n.wrapRouter = func(r provider.KadClosestPeersRouter) provider.KadClosestPeersRouter {
		return countingRouter{r, &lookups}
	}
	if err := n.restartProvider(); err != nil { // pick up the counting router
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "reprovider online", func() bool { return reproviderOnline(n) })

	ctx := context.Background()
	digests := make([]digest.Digest, keys)
	for i := range digests {
		digests[i] = randomDigest(t)
	}
	sent := func() float64 {
		return counterValue(t, n.metrics.provides.WithLabelValues("ok"))
	}
	measure := func(what string, start func()) {
		lookups.Store(0)
		sent0, cpu0, t0 := sent(), cpuTime(), time.Now()
		start()
		// Done when every record went out: keys × min(peers, 20) records.
		want := float64(keys * min(size-1, 20))
		waitFor(t, 10*time.Minute, what, func() bool { return sent()-sent0 >= want })
		t.Logf("%s: %d digests, %d nodes: %v wall, %v CPU (all nodes), %d peer lookups, %.0f records",
			what, keys, size, time.Since(t0).Round(time.Millisecond), (cpuTime() - cpu0).Round(time.Millisecond),
			lookups.Load(), sent()-sent0)
	}
	measure("first provide, one Provide call each", func() {
		for _, d := range digests {
			if err := n.Provide(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
	})
	measure("full re-announce (reprovider restart)", func() {
		if err := n.restartProvider(); err != nil {
			t.Fatal(err)
		}
	})
	n.provMu.RLock()
	st, _ := n.prov.sp.Stats(ctx)
	n.provMu.RUnlock()
	t.Logf("regions in schedule: %d, average prefix length %.1f, next sweep in %v",
		st.Schedule.Regions, st.Schedule.AvgPrefixLength, time.Until(st.Schedule.NextReprovideAt).Round(time.Minute))
	for _, other := range nodes[:2] {
		infos, err := other.FindProviders(ctx, digests[keys/2])
		if err != nil || len(infos) != 1 {
			t.Errorf("lookup after the sweep: %v, %v", infos, err)
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
