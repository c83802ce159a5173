package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/lifetime"
	"github.com/shoal-oci/shoal/internal/tags"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// announcer advertises content to the cluster in the background, each announcement bounded in
// time and ended when the node closes.
type announcer struct {
	node *p2p.Node
	log  *slog.Logger
	life *lifetime.Lifetime
	wg   sync.WaitGroup
}

// announceTimeout bounds one announcement.
const announceTimeout = time.Minute

func newAnnouncer(node *p2p.Node, log *slog.Logger) *announcer {
	return &announcer{node: node, log: log, life: lifetime.New()}
}

// Announce provides d, in the background.
func (an *announcer) Announce(d digest.Digest) {
	if an.life.Ended() {
		return
	}
	an.wg.Add(1)
	go func() {
		defer an.wg.Done()
		ctx, cancel := an.life.Context(announceTimeout)
		defer cancel()
		if err := an.node.Provide(ctx, d); err != nil && ctx.Err() == nil {
			an.log.Debug("providing failed", "digest", d, "err", err)
		}
	}()
}

// Withdraw stops providing d.
func (an *announcer) Withdraw(d digest.Digest) { an.node.StopProviding(d) }

// announceStored advertises everything committed, at start. The p2p node spreads the work out.
func (an *announcer) announceStored(st *store.Store) {
	n := 0
	err := st.Walk(func(d digest.Digest) bool {
		if an.life.Ended() {
			return false
		}
		ctx, cancel := an.life.Context(announceTimeout)
		if err := an.node.Provide(ctx, d); err != nil && ctx.Err() == nil {
			an.log.Debug("providing failed", "digest", d, "err", err)
		}
		cancel()
		n++
		return true
	})
	if err != nil {
		an.log.Warn("walking the store to advertise it", "err", err)
	}
	an.log.Info("advertised stored content", "objects", n)
}

// close ends announcements in progress and waits for them.
func (an *announcer) close() {
	an.life.End()
	an.wg.Wait()
}

// nodeCluster is what tag resolution asks of the peer network (resolve.Cluster).
type nodeCluster struct {
	node     *p2p.Node
	transfer *transfer.Client
}

func (c nodeCluster) CoordinatorFor(ctx context.Context, key string) (peer.ID, bool, error) {
	return c.node.CoordinatorFor(ctx, key)
}
func (c nodeCluster) Seeds(ctx context.Context) []peer.ID { return c.node.Seeds(ctx) }
func (c nodeCluster) AuthorizedSeed(ctx context.Context, p peer.ID) bool {
	return c.node.AuthorizedSeed(ctx, p)
}
func (c nodeCluster) Self() peer.ID { return c.node.ID() }
func (c nodeCluster) Resolve(ctx context.Context, p peer.ID, registry, repo, tag string, accept []string) (tags.Record, error) {
	return c.transfer.Resolve(ctx, p, registry, repo, tag, accept)
}

// collector keeps the store under its limit: a pass every gcInterval, and one soon after each
// commit (Kick).
type collector struct {
	st      *store.Store
	max     int64
	keeper  Keeper
	evicted func(digest.Digest)
	freed   prometheus.Counter
	log     *slog.Logger
	kick    chan struct{}
}

// gcInterval is how often the store's usage is checked against its limit when nothing is
// committed.
const gcInterval = time.Minute

func newCollector(st *store.Store, max int64, keeper Keeper, evicted func(digest.Digest), freed prometheus.Counter, log *slog.Logger) *collector {
	return &collector{st: st, max: max, keeper: keeper, evicted: evicted, freed: freed, log: log, kick: make(chan struct{}, 1)}
}

// Kick asks for a pass soon, without blocking.
func (c *collector) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// keep reports content GC must not evict: pinned, or referenced by the node's role.
func (c *collector) keep(d digest.Digest) bool {
	return c.st.Pinned(d) || (c.keeper != nil && c.keeper.Referenced(d))
}

// Run keeps the store under its limit until ctx ends. Without a limit it returns at once.
func (c *collector) Run(ctx context.Context) {
	if c.max <= 0 {
		return
	}
	policy := store.Policy{High: c.max, Low: c.max / 10 * 9, Keep: c.keep, Evicted: c.evicted}
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		freed, err := c.st.GC(ctx, policy)
		if err != nil && ctx.Err() == nil {
			c.log.Error("store GC failed", "err", err)
		}
		if freed > 0 {
			c.freed.Add(float64(freed))
			used, _ := c.st.Usage()
			c.log.Info("store GC evicted least recently used content", "bytes", freed, "store_bytes", used)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}
