// Package penalty is the penalty box of a node's swarm: the peers kept out of its fetches because
// they sent bytes failing verification, and the peers not to take one digest from (after a blob
// resumed from their states failed, when who forged them cannot be told). Entries expire; the box
// never grows past what the peers did in the last Duration.
package penalty

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// Duration is how long a peer stays in the box.
const Duration = 10 * time.Minute

// AnyPeer is the peer that, excluded for a digest, keeps every peer out of its fetches (while the
// target has an origin to fetch from instead).
const AnyPeer peer.ID = ""

// Box is a penalty box; its zero value is empty and ready.
type Box struct {
	mu       sync.Mutex
	until    map[peer.ID]time.Time
	excluded map[digestPeer]time.Time
}

type digestPeer struct {
	d digest.Digest
	p peer.ID
}

// ExcludeFor keeps ps out of fetches of d for Duration, without blaming them.
func (b *Box) ExcludeFor(d digest.Digest, ps []peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.excluded == nil {
		b.excluded = map[digestPeer]time.Time{}
	}
	now := time.Now()
	for k, t := range b.excluded {
		if now.After(t) {
			delete(b.excluded, k)
		}
	}
	for _, p := range ps {
		b.excluded[digestPeer{d, p}] = now.Add(Duration)
	}
}

// ExcludedFor reports whether p is kept out of fetches of d.
func (b *Box) ExcludedFor(d digest.Digest, p peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.excluded[digestPeer{d, p}]
	return ok && time.Now().Before(t)
}

// Penalize keeps p out of every fetch for Duration.
func (b *Box) Penalize(p peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.until == nil {
		b.until = map[peer.ID]time.Time{}
	}
	now := time.Now()
	for q, t := range b.until {
		if now.After(t) {
			delete(b.until, q)
		}
	}
	b.until[p] = now.Add(Duration)
}

// Penalized reports whether p is in the box.
func (b *Box) Penalized(p peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.until[p]
	if ok && time.Now().After(t) {
		delete(b.until, p)
		return false
	}
	return ok
}

// Usable reports whether p may be asked for d: neither penalized nor excluded for it.
func (b *Box) Usable(d digest.Digest, p peer.ID) bool {
	return !b.Penalized(p) && !b.ExcludedFor(d, p)
}
