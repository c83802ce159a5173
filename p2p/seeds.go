package p2p

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// SeedKey is the DHT key every seed provides, so that nodes find the cluster's seeds through the
// DHT with nothing listing them. It names no content: no node holds a blob with this digest.
var SeedKey = digest.FromString("shoal/seed-role/1")

const (
	// seedsTTL is how long a non-empty seed list is reused; a seed that stops is dropped sooner,
	// when its connection closes (Seeds keeps only seeds it is connected to).
	seedsTTL = 10 * time.Second
	// noSeedsTTL is how long "no seed" is reused: short, so that a seed that joins is found soon;
	// a busy node without seeds then looks them up every 2 s, an idle one not at all.
	noSeedsTTL = 2 * time.Second
	// seedDialTimeout bounds connecting to a seed the DHT names but this node is not connected to.
	seedDialTimeout = time.Second
)

// seedCache is the last seed lookup.
type seedCache struct {
	mu      sync.Mutex
	seeds   []peer.ID
	expires time.Time
	// refreshing is set while a background lookup runs, so that a burst of KnownSeeds calls
	// starts one.
	refreshing atomic.Bool
}

// IsSeed reports whether this node has the seed role.
func (n *Node) IsSeed() bool { return n.seed }

// Seeds returns the live seeds of the cluster, this node included when it is a seed. A seed is
// live when this node is connected to it (or connects within a second). The DHT is asked at most
// every few seconds; at most 8 seeds are found per lookup. Seeds waits for a lookup when the last
// one is too old; KnownSeeds does not.
func (n *Node) Seeds(ctx context.Context) []peer.ID {
	n.seeds.mu.Lock()
	if time.Now().Before(n.seeds.expires) {
		out := n.liveSeeds(n.seeds.seeds)
		n.seeds.mu.Unlock()
		return n.withSelf(out)
	}
	n.seeds.mu.Unlock()
	v, _, _ := n.lookups.Do("seeds", func() (any, error) { return n.lookupSeeds(), nil })
	return n.withSelf(n.liveSeeds(v.([]peer.ID)))
}

// KnownSeeds is Seeds without waiting: the seeds of the last lookup that are still live, with a
// new lookup started in the background when that one is too old. The fetch pipeline picks
// coordinators with it, so that a cluster without seeds pays no lookup per fetch.
func (n *Node) KnownSeeds() []peer.ID {
	n.seeds.mu.Lock()
	out := n.liveSeeds(n.seeds.seeds)
	stale := !time.Now().Before(n.seeds.expires)
	n.seeds.mu.Unlock()
	if stale && n.seeds.refreshing.CompareAndSwap(false, true) {
		started := n.background(func() {
			defer n.seeds.refreshing.Store(false)
			n.lookups.Do("seeds", func() (any, error) { return n.lookupSeeds(), nil })
		})
		if !started {
			n.seeds.refreshing.Store(false)
		}
	}
	return n.withSelf(out)
}

// lookupSeeds asks the DHT for the seeds, connects to those this node is not connected to, and
// records the live ones. It is bounded by the lookup and dial timeouts, and ends when the node
// closes.
func (n *Node) lookupSeeds() []peer.ID {
	ctx, cancel := n.untilClosed(context.Background(), n.lookupTimeout+seedDialTimeout)
	defer cancel()
	infos, _ := n.findProviders(ctx, SeedKey, true)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var live []peer.ID
	for _, info := range infos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n.host.Network().Connectedness(info.ID) != network.Connected {
				dctx, cancel := context.WithTimeout(ctx, seedDialTimeout)
				defer cancel()
				if err := n.host.Connect(dctx, info); err != nil {
					return
				}
			}
			mu.Lock()
			live = append(live, info.ID)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(live)
	ttl := seedsTTL
	if len(live) == 0 {
		ttl = noSeedsTTL
	}
	n.seeds.mu.Lock()
	n.seeds.seeds, n.seeds.expires = live, time.Now().Add(ttl)
	n.seeds.mu.Unlock()
	return live
}

// liveSeeds keeps the seeds this node is still connected to: a seed that stopped is dropped at
// once, not when the cache expires.
func (n *Node) liveSeeds(seeds []peer.ID) []peer.ID {
	var out []peer.ID
	for _, p := range seeds {
		if n.host.Network().Connectedness(p) == network.Connected {
			out = append(out, p)
		}
	}
	return out
}

func (n *Node) withSelf(seeds []peer.ID) []peer.ID {
	if n.seed && !slices.Contains(seeds, n.ID()) {
		seeds = append(seeds, n.ID())
	}
	return seeds
}

// background runs fn in a goroutine that Close waits for, unless the node is closing; it reports
// whether it did.
func (n *Node) background(fn func()) bool {
	n.runMu.Lock()
	defer n.runMu.Unlock()
	if n.isClosed() {
		return false
	}
	n.bgWG.Add(1)
	go func() {
		defer n.bgWG.Done()
		fn()
	}()
	return true
}
