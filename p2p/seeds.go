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
	// seedCheckTimeout bounds connecting to the peers that claim the seed role and checking
	// their authorization, after the lookup.
	seedCheckTimeout = 5 * time.Second
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

// Seeds returns the live authorized seeds of the cluster (AuthorizedSeed), this node included
// when it is one. A seed is live when this node is connected to it (or connects within a
// second). The DHT is asked at most every few seconds. Seeds waits for a lookup when the last one
// is too old; KnownSeeds does not.
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

// lookupSeeds asks the DHT for the peers that advertise the seed role, keeps the live ones the
// operator authorized (AuthorizedSeed), and records them. It is bounded in time, and ends when
// the node closes.
func (n *Node) lookupSeeds() []peer.ID {
	ctx, cancel := n.untilClosed(context.Background(), n.lookupTimeout+seedCheckTimeout)
	defer cancel()
	live := n.auth.Live(ctx, n.seedCandidates(ctx))
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

// seedCandidates are the peers that advertise SeedKey, from a provider lookup run to its end
// with no count: kad-dht's FindProvidersAsync stops at its count, so a capped lookup would let
// as many fake seeds as the cap hide the real ones.
func (n *Node) seedCandidates(ctx context.Context) []peer.AddrInfo {
	c, err := DigestCID(SeedKey)
	if err != nil || n.auth.Authority().Empty() {
		return nil // with no seed authority, no peer is a seed: nothing to look up
	}
	lctx, cancel := context.WithTimeout(ctx, n.lookupTimeout)
	defer cancel()
	n.seeds.mu.Lock()
	known := slices.Clone(n.seeds.seeds)
	n.seeds.mu.Unlock()
	return n.auth.Candidates(n.dht.FindProvidersAsync(lctx, c, 0), known)
}

// AuthorizedSeed reports whether p is a seed the operator authorized (see
// Config.SeedAuthorities): this node, when it is one, or a peer presenting a valid statement
// (asked once and remembered for a while). Only such peers' metadata (tag resolutions, pins)
// is acted on.
func (n *Node) AuthorizedSeed(ctx context.Context, p peer.ID) bool {
	if p == n.ID() {
		return n.selfSeed
	}
	return n.auth.Authorized(ctx, p)
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
	if n.selfSeed && !slices.Contains(seeds, n.ID()) {
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
