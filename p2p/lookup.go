package p2p

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

const (
	// maxProviders is how many providers one lookup returns; the fetch pipeline swarms from a handful
	// of peers, and stopping early keeps lookups short.
	maxProviders = 8
	// defaultLookupTimeout bounds one network lookup (a lookup in a loopback cluster of 100 answers in
	// a few milliseconds; 2 s covers slow networks and a peer or two that do not answer).
	defaultLookupTimeout = 2 * time.Second
	// cacheTTL is how long a non-empty answer is reused; it absorbs bursts of lookups for one digest
	// (a swarm refreshing its providers) without hiding new providers for long. An empty answer is never
	// reused: "nobody has it" is the answer that changes first in a rollout (the coordinator provides a
	// digest the moment it starts fetching it), a lookup that finds nothing costs a few milliseconds, and
	// concurrent lookups collapse anyway.
	cacheTTL = 3 * time.Second
	// maxCacheEntries bounds the cache; past it, expired entries are dropped, then everything.
	maxCacheEntries = 4096
	// firstGrace is how long a lookup goes on collecting providers after the first one.
	firstGrace = 5 * time.Millisecond
)

type cachedProviders struct {
	infos   []peer.AddrInfo
	expires time.Time
}

// FindProviders returns up to 8 peers (never this node) that advertise d. It returns as soon as 8 are
// found or the lookup ends, and a lookup never takes more than 2 s (or ctx's deadline, if sooner: then
// ctx's error is returned). Concurrent calls for one digest share one lookup, and non-empty answers are
// reused for 3 s. An empty result with a nil error means no provider is known.
func (n *Node) FindProviders(ctx context.Context, d digest.Digest) ([]peer.AddrInfo, error) {
	c, err := DigestCID(d)
	if err != nil {
		return nil, err
	}
	if n.isClosed() {
		return nil, ErrClosed
	}
	key := string(d)
	if infos, ok := n.cachedLookup(key); ok {
		return infos, nil
	}
	ch := n.lookups.DoChan(key, func() (any, error) {
		// The lookup belongs to every caller waiting on it, so it does not use any one caller's ctx.
		lctx, cancel := n.untilClosed(context.Background(), n.lookupTimeout)
		defer cancel()
		start := time.Now()
		var infos []peer.AddrInfo
		self := n.host.ID()
		// Ask for one more than we return: this node's own record may be among them.
		var grace *time.Timer
		for info := range n.dht.FindProvidersAsync(lctx, c, n.maxProviders+1) {
			if info.ID == self || len(infos) == n.maxProviders {
				continue // keep draining until the lookup closes the channel
			}
			infos = append(infos, info)
			if len(infos) == n.maxProviders {
				cancel() // enough: end the lookup; the loop drains what is in flight
			}
			if grace == nil {
				// The first provider answers the question that matters to a waiting client;
				// those that arrive within firstGrace come along, and a transfer finds the rest
				// later. Waiting for the whole query instead costs tens of milliseconds.
				grace = time.AfterFunc(n.firstGrace, cancel)
			}
		}
		if grace != nil {
			grace.Stop()
		}
		n.metrics.lookupDuration.Observe(time.Since(start).Seconds())
		n.metrics.providersFound.Observe(float64(len(infos)))
		n.storeLookup(key, infos)
		return infos, nil
	})
	select {
	case r := <-ch:
		infos, _ := r.Val.([]peer.AddrInfo)
		return append([]peer.AddrInfo(nil), infos...), r.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("find providers of %s: %w", d, ctx.Err())
	}
}

func (n *Node) cachedLookup(key string) ([]peer.AddrInfo, bool) {
	n.cacheMu.Lock()
	defer n.cacheMu.Unlock()
	e, ok := n.cache[key]
	if !ok || time.Now().After(e.expires) {
		return nil, false
	}
	return append([]peer.AddrInfo(nil), e.infos...), true
}

func (n *Node) storeLookup(key string, infos []peer.AddrInfo) {
	if len(infos) == 0 {
		return
	}
	now := time.Now()
	n.cacheMu.Lock()
	defer n.cacheMu.Unlock()
	if len(n.cache) >= maxCacheEntries {
		for k, e := range n.cache {
			if now.After(e.expires) {
				delete(n.cache, k)
			}
		}
		if len(n.cache) >= maxCacheEntries {
			clear(n.cache)
		}
	}
	n.cache[key] = cachedProviders{infos: infos, expires: now.Add(cacheTTL)}
}

// ClosestPeers returns the peers the DHT finds XOR-closest to key (at most the bucket size, 20), the
// same answer on every node of a converged cluster; the fetch pipeline picks a digest's coordinator from
// it. key is a raw DHT key: for a digest, string(DigestCID(d).Hash()). This node is never in the list.
func (n *Node) ClosestPeers(ctx context.Context, key string) ([]peer.ID, error) {
	if n.isClosed() {
		return nil, ErrClosed
	}
	return n.dht.GetClosestPeers(ctx, key)
}
