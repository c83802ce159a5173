package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

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
	// mu orders Announce's wg.Add before close's wg.Wait: an Add racing a Wait that may already
	// have seen zero is a misuse of WaitGroup (and a race the detector reports).
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// announceTimeout bounds one announcement.
const announceTimeout = time.Minute

func newAnnouncer(node *p2p.Node, log *slog.Logger) *announcer {
	return &announcer{node: node, log: log, life: lifetime.New()}
}

// Announce provides d, in the background.
func (an *announcer) Announce(d digest.Digest) {
	an.mu.Lock()
	if an.closed {
		an.mu.Unlock()
		return
	}
	an.wg.Add(1)
	an.mu.Unlock()
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
	lctx, lcancel := an.life.Context(announceTimeout)
	entries, err := st.Entries(lctx)
	lcancel()
	n := 0
	for _, e := range entries {
		if an.life.Ended() {
			break
		}
		if e.Partial {
			continue
		}
		ctx, cancel := an.life.Context(announceTimeout)
		if err := an.node.Provide(ctx, e.Digest); err != nil && ctx.Err() == nil {
			an.log.Debug("providing failed", "digest", e.Digest, "err", err)
		}
		cancel()
		n++
	}
	if err != nil {
		an.log.Warn("walking the store to advertise it", "err", err)
	}
	an.log.Info("advertised stored content", "objects", n)
}

// close ends announcements in progress and waits for them.
func (an *announcer) close() {
	an.mu.Lock()
	an.closed = true
	an.mu.Unlock()
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

// keep reports content garbage collection must not evict: pinned, or referenced by the node's
// role.
func keep(st *store.Store, keeper Keeper) func(digest.Digest) bool {
	return func(d digest.Digest) bool { return st.Pins().Pinned(d) || (keeper != nil && keeper.Referenced(d)) }
}
