package p2p

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// firstBackoff is the delay after the first failed bootstrap attempt; it doubles up to
// Node.maxBootstrapBackoff (10 s).
const firstBackoff = 250 * time.Millisecond

// pendingInterval is how often Run checks for a first peer while the reprovider is not running.
const pendingInterval = 25 * time.Millisecond

// Run joins the cluster and keeps the node in it until ctx ends or Close is called; then it stops the
// reprovider and returns nil (ErrClosed if the node was closed before Run started). One Run at a time;
// the advertised digests persist across Runs.
//
// Joining: Run connects to every bootstrap peer in parallel (learning peer IDs and resolving DNS names as
// needed) and refreshes the routing table; while no bootstrap peer answers it retries with exponential
// backoff capped at 10 s. A node with no bootstrap entries waits for others to join it.
//
// Staying joined: every second Run checks whether the node is cut off (empty routing table or no
// connection at all) and, if so, bootstraps again the same way. Whenever the node has (re)joined, the
// reprovider is (re)started, which announces every advertised digest once: records this node published
// may have been lost with restarted peers while it was away. Restarts are at least a minute apart so
// that a flapping network cannot turn into a provide storm.
func (n *Node) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("p2p: Run is already running")
	}
	defer n.running.Store(false)
	n.runMu.Lock()
	if n.isClosed() {
		n.runMu.Unlock()
		return ErrClosed
	}
	n.runWG.Add(1)
	n.runMu.Unlock()
	defer n.runWG.Done()
	ctx, cancel := n.untilClosed(ctx, 0)
	defer cancel()
	defer n.stopProvider()

	var (
		needProvider = true // (re)start the reprovider once joined
		started      time.Time
	)
	for {
		if n.isolated() {
			needProvider = true
			if len(n.bootstrap) > 0 {
				n.join(ctx)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if needProvider && !n.isolated() && (started.IsZero() || time.Since(started) >= n.minProviderRestart) {
			if err := n.restartProvider(); err != nil {
				n.log.Warn("start reprovider", "error", err)
			} else {
				needProvider = false
				started = time.Now()
				n.log.Debug("reprovider started", "digests", n.providedCount())
				n.KnownSeeds() // look the seeds up now, before the first fetch needs them
			}
		}
		// Poll fast while the reprovider waits for the first peer (a seed waiting to be joined), slowly
		// otherwise; both checks are two counter reads.
		interval := n.healthInterval
		if needProvider {
			interval = pendingInterval
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// isolated reports whether the node is cut off from the cluster.
func (n *Node) isolated() bool {
	return n.dht.RoutingTable().Size() == 0 || len(n.host.Network().Peers()) == 0
}

// join bootstraps until it succeeds or ctx ends.
func (n *Node) join(ctx context.Context) {
	ctx = network.WithForceDirectDial(ctx, "shoal bootstrap") // our backoff replaces the swarm's
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := n.bootstrapOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			n.log.Info("joined cluster", "peers", len(n.host.Network().Peers()),
				"routing_table", n.RoutingTableSize(), "attempts", attempt, "duration", time.Since(start))
			return
		}
		// Jitter keeps a cluster that lost its seed from retrying in lockstep.
		delay := time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		level := slog.LevelDebug
		if attempt == 1 || attempt%10 == 0 {
			level = slog.LevelWarn
		}
		n.log.Log(ctx, level, "bootstrap failed, retrying", "attempt", attempt, "retry_in", delay, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, n.maxBootstrapBackoff)
	}
}
