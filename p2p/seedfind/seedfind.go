// Package seedfind finds the cluster's seeds: the peers that advertise the seed role in the DHT,
// kept when the operator authorized them (p2p/seedauth) and while this node is connected to them.
// The list is cached for a few seconds, and the cache ends early when a peer that speaks the seed
// statement protocol connects, so that a seed that just joined is found at once.
package seedfind

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-oci/shoal/p2p/seedauth"
)

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
	// claimantRecheck is the least time between two early ends of the cache.
	claimantRecheck = 500 * time.Millisecond
)

// Providers finds the peers that advertise a DHT key; kad-dht's *dht.IpfsDHT is one.
type Providers interface {
	FindProvidersAsync(ctx context.Context, key cid.Cid, count int) <-chan peer.AddrInfo
}

// Config is what a Finder needs of its node.
type Config struct {
	Host      host.Host
	Providers Providers
	// Key is the DHT key every seed provides.
	Key  cid.Cid
	Auth *seedauth.Checker
	// Self is true when the node is a seed in its own eyes (its authority key is one it trusts,
	// or it lists itself): it is then in every list.
	Self bool
	// LookupTimeout bounds the provider lookup.
	LookupTimeout time.Duration
}

// Finder keeps the list of the cluster's live authorized seeds. Start it, and Close it before
// the host closes. All methods are safe for concurrent use.
type Finder struct {
	cfg     Config
	lookups singleflight.Group

	mu    sync.Mutex
	seeds []peer.ID
	// claimant is when a connected peer not on the list last spoke the statement protocol, and
	// early when that last ended the cache early (claimantConnected).
	claimant, early time.Time
	expires         time.Time
	// refreshing is set while a background lookup runs, so that a burst of Known calls starts one.
	refreshing atomic.Bool

	runMu sync.Mutex // orders starting background work against Close
	// bg counts the goroutines Close waits for: background lookups, since a dial still under way
	// when the host closes crashes libp2p's swarm (its transports are gone; go-libp2p issue
	// 1545), and the claimant watcher.
	bg        sync.WaitGroup
	closed    chan struct{}
	closeOnce sync.Once
}

// New returns a Finder that has looked nothing up yet.
func New(cfg Config) *Finder {
	return &Finder{cfg: cfg, closed: make(chan struct{})}
}

// Start watches for connected peers that claim the seed role (see claimantConnected). It
// watches nothing when no peer can be a seed.
func (f *Finder) Start() error {
	if f.cfg.Auth.Authority().Empty() {
		return nil // no peer can be a seed: nothing to recheck
	}
	sub, err := f.cfg.Host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return fmt.Errorf("p2p: watching for seeds: %w", err)
	}
	f.bg.Add(1)
	go func() {
		defer f.bg.Done()
		defer sub.Close()
		for {
			select {
			case <-f.closed:
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				ev := e.(event.EvtPeerIdentificationCompleted)
				if slices.Contains(ev.Protocols, seedauth.ProtocolID) {
					f.claimantConnected(ev.Peer)
				}
			}
		}
	}()
	return nil
}

// Close ends the lookups under way and waits for them and for the watcher. It is idempotent.
func (f *Finder) Close() {
	f.closeOnce.Do(func() {
		f.runMu.Lock()
		close(f.closed)
		f.runMu.Unlock()
		f.bg.Wait()
	})
}

// Seeds returns the live authorized seeds of the cluster (Authorized), this node included when
// it is one. A seed is live when this node is connected to it (or connects within a second). The
// DHT is asked at most every few seconds. Seeds waits for a lookup when the last one is too old;
// Known does not.
func (f *Finder) Seeds(ctx context.Context) []peer.ID {
	f.mu.Lock()
	if time.Now().Before(f.expires) {
		out := f.live(f.seeds)
		f.mu.Unlock()
		return f.withSelf(out)
	}
	f.mu.Unlock()
	v, _, _ := f.lookups.Do("seeds", func() (any, error) { return f.lookup(), nil })
	return f.withSelf(f.live(v.([]peer.ID)))
}

// Known is Seeds without waiting: the seeds of the last lookup that are still live, with a new
// lookup started in the background when that one is too old. The fetch pipeline picks
// coordinators with it, so that a cluster without seeds pays no lookup per fetch.
func (f *Finder) Known() []peer.ID {
	f.mu.Lock()
	out := f.live(f.seeds)
	stale := !time.Now().Before(f.expires)
	f.mu.Unlock()
	if stale && f.refreshing.CompareAndSwap(false, true) {
		started := f.background(func() {
			defer f.refreshing.Store(false)
			f.lookups.Do("seeds", func() (any, error) { return f.lookup(), nil })
		})
		if !started {
			f.refreshing.Store(false)
		}
	}
	return f.withSelf(out)
}

// Expire ends the cache of the last lookup, so that the next Seeds call asks the DHT again.
func (f *Finder) Expire() {
	f.mu.Lock()
	f.expires = time.Time{}
	f.mu.Unlock()
}

// Authorized reports whether p is a seed the operator authorized (see
// p2p.Config.SeedAuthorities): this node, when it is one, or a peer presenting a valid statement
// (asked once and remembered for a while). Only such peers' metadata (tag resolutions, pins) is
// acted on.
func (f *Finder) Authorized(ctx context.Context, p peer.ID) bool {
	if p == f.cfg.Host.ID() {
		return f.cfg.Self
	}
	return f.cfg.Auth.Authorized(ctx, p)
}

// lookup asks the DHT for the peers that advertise the seed role, keeps the live ones the
// operator authorized (Authorized), and records them. It is bounded in time, and ends when the
// Finder closes.
func (f *Finder) lookup() []peer.ID {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.LookupTimeout+seedCheckTimeout)
	defer cancel()
	go func() {
		select {
		case <-f.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	live := f.cfg.Auth.Live(ctx, f.candidates(ctx))
	slices.Sort(live)
	ttl := seedsTTL
	if len(live) == 0 {
		ttl = noSeedsTTL
	}
	f.mu.Lock()
	f.seeds, f.expires = live, time.Now().Add(ttl)
	if f.claimant.After(start) {
		// A claimant connected while the lookup ran and may not be in it: look again soon.
		if soon := time.Now().Add(claimantRecheck); f.expires.After(soon) {
			f.expires = soon
		}
	}
	f.mu.Unlock()
	return live
}

// candidates are the peers that advertise the seed key, from a provider lookup run to its end
// with no count: kad-dht's FindProvidersAsync stops at its count, so a capped lookup would let as
// many fake seeds as the cap hide the real ones.
func (f *Finder) candidates(ctx context.Context) []peer.AddrInfo {
	if !f.cfg.Key.Defined() || f.cfg.Auth.Authority().Empty() {
		return nil // with no seed authority, no peer is a seed: nothing to look up
	}
	lctx, cancel := context.WithTimeout(ctx, f.cfg.LookupTimeout)
	defer cancel()
	f.mu.Lock()
	known := slices.Clone(f.seeds)
	f.mu.Unlock()
	found := f.cfg.Auth.Candidates(f.cfg.Providers.FindProvidersAsync(lctx, f.cfg.Key, 0), known)
	// A seed this node is connected to (its bootstrap peer, say) is a candidate before its DHT
	// record reaches the node: identify reported that it speaks the statement protocol.
	for _, p := range f.cfg.Host.Network().Peers() {
		if ok, _ := f.cfg.Host.Peerstore().SupportsProtocols(p, seedauth.ProtocolID); len(ok) == 0 {
			continue
		}
		if !slices.ContainsFunc(found, func(info peer.AddrInfo) bool { return info.ID == p }) {
			found = append(found, peer.AddrInfo{ID: p})
		}
	}
	return found
}

// claimantConnected ends the cache early when a connected peer that speaks the statement
// protocol is not on the list, so that a seed that just joined (or that this node just
// bootstrapped from) is checked at the next Seeds or Known call instead of when "no seed"
// expires: with the origin down, a tag can be answered only by a seed this node knows. At most
// one early end per claimantRecheck, so that peers connecting over and over cost bounded lookups.
func (f *Finder) claimantConnected(p peer.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if slices.Contains(f.seeds, p) {
		return
	}
	now := time.Now()
	f.claimant = now
	if next := f.early.Add(claimantRecheck); now.After(next) {
		f.expires, f.early = time.Time{}, now
	} else if f.expires.After(next) {
		f.expires = next
	}
}

// live keeps the seeds this node is still connected to: a seed that stopped is dropped at once,
// not when the cache expires.
func (f *Finder) live(seeds []peer.ID) []peer.ID {
	var out []peer.ID
	for _, p := range seeds {
		if f.cfg.Host.Network().Connectedness(p) == network.Connected {
			out = append(out, p)
		}
	}
	return out
}

func (f *Finder) withSelf(seeds []peer.ID) []peer.ID {
	if f.cfg.Self && !slices.Contains(seeds, f.cfg.Host.ID()) {
		seeds = append(seeds, f.cfg.Host.ID())
	}
	return seeds
}

// background runs fn in a goroutine that Close waits for, unless the Finder is closing; it
// reports whether it did.
func (f *Finder) background(fn func()) bool {
	f.runMu.Lock()
	defer f.runMu.Unlock()
	select {
	case <-f.closed:
		return false
	default:
	}
	f.bg.Add(1)
	go func() {
		defer f.bg.Done()
		fn()
	}()
	return true
}
