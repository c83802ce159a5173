package seedauth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-oci/shoal/internal/errdefs"
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

// ask fetches and verifies p's statement and records the verdict. A peer that could not be
// asked (no stream, or ctx ended) is not recorded as refused: a real seed must not lose its role
// for a while over a transient error.
func (c *Checker) ask(ctx context.Context, p peer.ID, done chan struct{}) bool {
	st, err := Fetch(ctx, c.h, p)
	now := time.Now()
	ok := err == nil && c.auth.Verify(st, p, now) == nil
	record := ok || (ctx.Err() == nil && !errors.Is(err, errdefs.ErrUnavailable))
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
	if !record {
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

// maxCandidates bounds the peers claiming the seed role that one lookup checks.
const maxCandidates = 256

// Candidates drains a provider lookup of the seed role into the peers to check (Live): at most
// 256, this node left out, and those in known (found before) or listed by ID first, so that a
// flood of claimants larger than the bound costs the real seeds nothing.
func (c *Checker) Candidates(found <-chan peer.AddrInfo, known []peer.ID) []peer.AddrInfo {
	var first, rest []peer.AddrInfo
	for info := range found {
		switch {
		case info.ID == c.h.ID(), len(first)+len(rest) >= maxCandidates:
			// keep draining until the lookup closes the channel
		case slices.Contains(known, info.ID) || c.auth.Listed(info.ID):
			first = append(first, info)
		default:
			rest = append(rest, info)
		}
	}
	return append(first, rest...)
}

const (
	// dialTimeout bounds connecting to a peer that claims the seed role.
	dialTimeout = time.Second
	// checks is how many claimants are connected to and checked at once.
	checks = 16
)

// Live returns the candidates that are authorized seeds and that this node is connected to or
// connects to within a second, in no particular order. It checks 16 at a time and stops when
// ctx ends.
func (c *Checker) Live(ctx context.Context, candidates []peer.AddrInfo) []peer.ID {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var live []peer.ID
	slots := make(chan struct{}, checks)
	for _, info := range candidates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				return
			}
			if c.h.Network().Connectedness(info.ID) != network.Connected {
				dctx, cancel := context.WithTimeout(ctx, dialTimeout)
				defer cancel()
				if err := c.h.Connect(dctx, info); err != nil {
					return
				}
			}
			if c.Authorized(ctx, info.ID) {
				mu.Lock()
				live = append(live, info.ID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return live
}

// Setup builds what decides, on the node of h, who is a seed: it trusts keys and the listed
// peers. A seed with the authority key seedKey also trusts that key, serves its own statement on
// h, and is a seed in its own eyes (self); so is a seed that lists itself.
func Setup(h host.Host, seed bool, keys []ed25519.PublicKey, peers []peer.ID, seedKey ed25519.PrivateKey) (c *Checker, self bool) {
	keys = slices.Clone(keys)
	if seed && seedKey != nil {
		s := NewSigner(seedKey, h.ID(), 0)
		keys = append(keys, s.PublicKey())
		Serve(h, s)
	}
	auth := NewAuthority(keys, peers)
	return NewChecker(h, auth), seed && (seedKey != nil || auth.Listed(h.ID()))
}
