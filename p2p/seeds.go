package p2p

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-oci/shoal/p2p/seedauth"
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
	mu    sync.Mutex
	seeds []peer.ID
	// claimant is when a connected peer not on the list last spoke the statement protocol, and
	// early when that last ended the cache early (seedClaimantConnected).
	claimant, early time.Time
	expires         time.Time
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
	start := time.Now()
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
	if n.seeds.claimant.After(start) {
		// A claimant connected while the lookup ran and may not be in it: look again soon.
		if soon := time.Now().Add(claimantRecheck); n.seeds.expires.After(soon) {
			n.seeds.expires = soon
		}
	}
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
	found := n.auth.Candidates(n.dht.FindProvidersAsync(lctx, c, 0), known)
	// A seed this node is connected to (its bootstrap peer, say) is a candidate before its DHT
	// record reaches the node: identify reported that it speaks the statement protocol.
	for _, p := range n.host.Network().Peers() {
		if ok, _ := n.host.Peerstore().SupportsProtocols(p, seedauth.ProtocolID); len(ok) == 0 {
			continue
		}
		if !slices.ContainsFunc(found, func(info peer.AddrInfo) bool { return info.ID == p }) {
			found = append(found, peer.AddrInfo{ID: p})
		}
	}
	return found
}

// watchSeedClaimants ends the seed list's cache early when a connected peer that speaks the
// statement protocol is not on it, so that a seed that just joined (or that this node just
// bootstrapped from) is checked at the next Seeds or KnownSeeds call instead of when "no seed"
// expires: with the origin down, a tag can be answered only by a seed this node knows. At most
// one early end per claimantRecheck, so that peers connecting over and over cost bounded lookups.
func (n *Node) watchSeedClaimants() error {
	if n.auth.Authority().Empty() {
		return nil // no peer can be a seed: nothing to recheck
	}
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return fmt.Errorf("p2p: watching for seeds: %w", err)
	}
	n.bgWG.Add(1)
	go func() {
		defer n.bgWG.Done()
		defer sub.Close()
		for {
			select {
			case <-n.closed:
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				ev := e.(event.EvtPeerIdentificationCompleted)
				if slices.Contains(ev.Protocols, seedauth.ProtocolID) {
					n.seedClaimantConnected(ev.Peer)
				}
			}
		}
	}()
	return nil
}

// claimantRecheck is the least time between two early ends of the seed list's cache.
const claimantRecheck = 500 * time.Millisecond

func (n *Node) seedClaimantConnected(p peer.ID) {
	n.seeds.mu.Lock()
	defer n.seeds.mu.Unlock()
	if slices.Contains(n.seeds.seeds, p) {
		return
	}
	now := time.Now()
	n.seeds.claimant = now
	if next := n.seeds.early.Add(claimantRecheck); now.After(next) {
		n.seeds.expires, n.seeds.early = time.Time{}, now
	} else if n.seeds.expires.After(next) {
		n.seeds.expires = next
	}
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
