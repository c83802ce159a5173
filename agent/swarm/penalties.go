package swarm

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// penaltyBox keeps out peers that sent bytes failing verification (for PenaltyDuration), and
// peers not to take one digest from (after a blob failed that was resumed from their states,
// when who forged them cannot be told). Entries expire; the box never grows past what the
// peers did in the last PenaltyDuration.
type penaltyBox struct {
	mu       sync.Mutex
	until    map[peer.ID]time.Time
	excluded map[digestPeer]time.Time
}

type digestPeer struct {
	d digest.Digest
	p peer.ID
}

// excludeFor keeps ps out of fetches of d for PenaltyDuration, without blaming them.
func (b *penaltyBox) excludeFor(d digest.Digest, ps []peer.ID) {
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
		b.excluded[digestPeer{d, p}] = now.Add(PenaltyDuration)
	}
}

// anyPeer, excluded for a digest, keeps every peer out of its fetches (while the target has an
// origin to fetch from instead).
const anyPeer peer.ID = ""

// excludedFor reports whether p is kept out of fetches of d.
func (b *penaltyBox) excludedFor(d digest.Digest, p peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.excluded[digestPeer{d, p}]
	return ok && time.Now().Before(t)
}

// penalize keeps p out of every fetch for PenaltyDuration.
func (b *penaltyBox) penalize(p peer.ID) {
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
	b.until[p] = now.Add(PenaltyDuration)
}

// penalized reports whether p is in the box.
func (b *penaltyBox) penalized(p peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.until[p]
	if ok && time.Now().After(t) {
		delete(b.until, p)
		return false
	}
	return ok
}
