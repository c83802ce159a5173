package seedauth

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	// maxVerifiedAge bounds how long a verified statement is reused before the peer is asked
	// again (never past the statement's own expiry).
	maxVerifiedAge = 10 * time.Minute
	// refusedTTL is how long a peer that is not an authorized seed is not asked again: long
	// enough that a flood of fake seeds costs one stream each per lookup interval at most, short
	// enough that a seed given its key later is soon found.
	refusedTTL = 30 * time.Second
	// maxCached bounds the cache; past it, expired entries go, then everything.
	maxCached = 4096
)

// Checker answers whether peers are authorized seeds, asking each peer for its statement over
// h and remembering the verdict for a while. A peer is asked at most once at a time.
type Checker struct {
	h    host.Host
	auth *Authority

	mu       sync.Mutex
	verdicts map[peer.ID]verdict
	inflight map[peer.ID]chan struct{}
}

type verdict struct {
	ok    bool
	until time.Time
}

// NewChecker checks peers against auth (nil: no peer is a seed).
func NewChecker(h host.Host, auth *Authority) *Checker {
	return &Checker{h: h, auth: auth, verdicts: map[peer.ID]verdict{}, inflight: map[peer.ID]chan struct{}{}}
}

// Authority is what the checker trusts.
func (c *Checker) Authority() *Authority { return c.auth }

// Authorized reports whether p is a seed the operator authorized: listed by ID, or presenting a
// valid statement of a trusted authority over the authenticated channel to p.
func (c *Checker) Authorized(ctx context.Context, p peer.ID) bool {
	if c.auth.Listed(p) {
		return true
	}
	if !c.auth.NeedsStatements() {
		return false
	}
	for {
		c.mu.Lock()
		if v, ok := c.verdicts[p]; ok && time.Now().Before(v.until) {
			c.mu.Unlock()
			return v.ok
		}
		wait, busy := c.inflight[p]
		if !busy {
			wait = make(chan struct{})
			c.inflight[p] = wait
		}
		c.mu.Unlock()
		if !busy {
			return c.ask(ctx, p, wait)
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return false
		}
	}
}

// ask fetches and verifies p's statement and records the verdict. A peer that cannot be asked
// (ctx ended) is not recorded as refused.
func (c *Checker) ask(ctx context.Context, p peer.ID, done chan struct{}) bool {
	st, err := Fetch(ctx, c.h, p)
	now := time.Now()
	ok := err == nil && c.auth.Verify(st, p, now) == nil
	v := verdict{ok: ok, until: now.Add(refusedTTL)}
	if ok {
		v.until = now.Add(maxVerifiedAge)
		if st.Expires.Before(v.until) {
			v.until = st.Expires
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, p)
	close(done)
	if ctx.Err() != nil && !ok {
		return false
	}
	if len(c.verdicts) >= maxCached {
		for k, e := range c.verdicts {
			if !now.Before(e.until) {
				delete(c.verdicts, k)
			}
		}
		if len(c.verdicts) >= maxCached {
			clear(c.verdicts)
		}
	}
	c.verdicts[p] = v
	return ok
}
