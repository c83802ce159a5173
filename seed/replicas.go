package seed

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/lifetime"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/internal/reference"
	"github.com/shoal-oci/shoal/p2p"
)

// replicator keeps each pin's replica count on the seeds: the seeds holding a pin check, every
// RepairInterval, how many live seeds hold it, and the one XOR-closest to the pin's digest asks
// seeds that lack it to pin it too, until Replicas seeds hold it.
type replicator struct {
	a    *agent.Agent
	pins *pins.Pins
	log  *slog.Logger
	peer *seedPeer
	// replicas is the replica count of a pin that names none.
	replicas int
	interval time.Duration

	// life bounds background work (replicas being fetched, pins of pushed tags); close ends
	// it and waits for wg.
	life *lifetime.Lifetime
	wg   sync.WaitGroup
	// adoptSlots bounds the replicas fetched at once for other seeds.
	adoptSlots chan struct{}

	mu sync.Mutex
	// adding holds the pins being fetched for another seed's repair, by key.
	adding map[string]bool
}

// maxAdopting is how many replicas a seed fetches at once for other seeds; past it, it answers
// busy and the asking seed tries again at its next round.
const maxAdopting = 4

func newReplicator(a *agent.Agent, p *pins.Pins, peer *seedPeer, log *slog.Logger, replicas int, interval time.Duration) *replicator {
	return &replicator{a: a, pins: p, peer: peer, log: log, replicas: max(replicas, 1), interval: interval, adding: map[string]bool{},
		adoptSlots: make(chan struct{}, maxAdopting), life: lifetime.New()}
}

// close stops background work and waits for it; the seed calls it before the store closes.
func (p *replicator) close() {
	p.mu.Lock()
	p.life.End()
	p.mu.Unlock()
	p.wg.Wait()
}

// spawn runs fn in the background unless close has begun, reporting whether it did.
func (p *replicator) spawn(fn func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.life.Ended() {
		return false
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); fn() }()
	return true
}

// holding is what a seed holds of a pin: nothing, or a digest chosen at a time.
type holding struct {
	Known   bool          `json:"known"`
	Digest  digest.Digest `json:"digest,omitempty"`
	Created time.Time     `json:"created"`
}

func (p *replicator) holding(key string) holding {
	pin, ok := p.pins.Get(key)
	if !ok {
		return holding{}
	}
	return holding{Known: true, Digest: pin.Digest, Created: pin.Created}
}

// adopt pins a pin record another seed sent for repair, in the background: it fetches the same
// content by digest (from peers; the origin may be down) and records the pin, unless this node
// holds a newer pin of the same reference. It returns at once; errdefs.ErrUnavailable when it
// is fetching as many replicas as it takes at a time.
func (p *replicator) adopt(pin pins.Pin) error {
	if err := validPin(pin); err != nil {
		return err
	}
	if now := time.Now().UTC(); pin.Created.After(now) {
		// A pin dated in the future would outrank every later pin of the same reference.
		pin.Created = now
	}
	if cur, ok := p.pins.Get(pin.Key()); ok && (cur.Digest == pin.Digest || cur.Created.After(pin.Created)) {
		return nil
	}
	p.mu.Lock()
	if p.adding[pin.Key()] {
		p.mu.Unlock()
		return nil
	}
	select {
	case p.adoptSlots <- struct{}{}:
	default:
		p.mu.Unlock()
		return fmt.Errorf("fetching %d replicas already: %w", maxAdopting, errdefs.ErrUnavailable)
	}
	p.adding[pin.Key()] = true
	p.mu.Unlock()
	started := p.spawn(func() {
		defer func() {
			p.mu.Lock()
			delete(p.adding, pin.Key())
			<-p.adoptSlots
			p.mu.Unlock()
		}()
		ctx, cancel := p.life.Context(adoptTimeout)
		defer cancel()
		got, err := p.fetchPinned(ctx, pin)
		if err != nil {
			p.log.Warn("replicating a pin failed", "pin", pin.Key(), "digest", pin.Digest, "err", err)
			return
		}
		pin.Digests, pin.Manifests, pin.Bytes = got.Digests, got.Manifests, got.Bytes
		put, err := p.pins.Put(pin)
		if err != nil {
			p.log.Error("recording a replicated pin failed", "pin", pin.Key(), "err", err)
			return
		}
		if put {
			p.log.Info("pinned a replica for the cluster", "pin", pin.Key(), "digest", pin.Digest, "bytes", pin.Bytes)
		}
	})
	if !started {
		p.mu.Lock()
		delete(p.adding, pin.Key())
		<-p.adoptSlots
		p.mu.Unlock()
		return fmt.Errorf("seed closing: %w", errdefs.ErrUnavailable)
	}
	return nil
}

// fetchPinned fetches a pin's content by digest: a pushed image from the cluster only, an
// upstream one through the pipeline (peers first).
func (p *replicator) fetchPinned(ctx context.Context, pin pins.Pin) (pins.Pin, error) {
	req := pins.PreheatRequest{Platforms: pin.Platforms, AllPlatforms: pin.AllPlatforms}
	platforms, err := pins.ParsePlatforms(req)
	if err != nil {
		return pins.Pin{}, err
	}
	ref := reference.Ref{Registry: pin.Registry, Repo: pin.Repo, Digest: pin.Digest}
	t := fetch.Target{Repo: pin.Repo}
	if !pin.Hosted {
		if t, err = p.a.Target(pin.Registry, pin.Repo); err != nil {
			return pins.Pin{}, err
		}
	}
	return p.pins.FetchImage(ctx, t, ref, platforms, req, func(pins.Progress) {})
}

func validPin(pin pins.Pin) error {
	bad := func() error { return fmt.Errorf("pin record of %q is inconsistent: %w", pin.Ref, errdefs.ErrInvalid) }
	if pin.Digest.Validate() != nil || pin.Replicas < 0 || pin.Replicas > pins.MaxReplicas || len(pin.Platforms) > 64 {
		return bad()
	}
	if pin.Hosted {
		if pin.Registry != "" || !names.ValidRepository(pin.Repo) || !names.ValidTag(pin.Tag) || pin.Ref != pin.Repo+":"+pin.Tag {
			return bad()
		}
		return nil
	}
	r, err := reference.Parse(pin.Ref)
	if err != nil {
		return err
	}
	if r.String() != pin.Ref || pin.Repo != r.Repo || pin.Registry != r.Registry {
		return bad()
	}
	return nil
}

// adoptTimeout bounds fetching a replica.
const adoptTimeout = time.Hour

// run repairs replica counts until ctx ends.
func (p *replicator) run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.repairAll(ctx)
	}
}

// repairAll brings every pin with more than one replica up to its count: one holdings request per
// live seed for all of them, then a repair per pin.
func (p *replicator) repairAll(ctx context.Context) {
	all, err := p.pins.List()
	if err != nil {
		p.log.Error("listing pins", "err", err)
		return
	}
	var keys []string
	for _, pin := range all {
		if pin.Replicas > 1 {
			keys = append(keys, pin.Key())
		}
	}
	if len(keys) == 0 {
		return
	}
	node := p.a.Node()
	held := map[peer.ID]map[string]holding{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range node.Seeds(ctx) {
		if s == node.ID() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := p.peer.holdings(ctx, s, keys)
			if err != nil {
				return // a seed that cannot answer is neither counted nor asked this round
			}
			mu.Lock()
			held[s] = h
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, pin := range all {
		if ctx.Err() != nil {
			return
		}
		if pin.Replicas > 1 {
			p.repair(ctx, pin, held)
		}
	}
}

// repair brings one pin up to its replica count, if this seed is the pin's leader: the holder
// XOR-closest to the pin's digest. Every holder computes the same leader from the same seeds, so
// one seed asks, and the ones it asks are the non-holders closest to the digest. A seed that
// holds a newer pin of the same reference (the tag was pushed or pinned again) makes this pin
// outdated: this seed then waits to be sent the newer one instead of spreading its own.
func (p *replicator) repair(ctx context.Context, pin pins.Pin, held map[peer.ID]map[string]holding) {
	c, err := p2p.DigestCID(pin.Digest)
	if err != nil {
		return
	}
	key := string(c.Hash())
	self := p.a.Node().ID()
	holders := []peer.ID{self}
	var others []peer.ID
	outdated := false
	for s, hs := range held {
		switch h := hs[pin.Key()]; {
		case h.Known && h.Digest == pin.Digest:
			holders = append(holders, s)
		case h.Known && h.Created.After(pin.Created):
			outdated = true
		default:
			others = append(others, s)
		}
	}
	if outdated || len(holders) >= pin.Replicas {
		return
	}
	if leader := p2p.ByDistance(key, holders)[0]; leader != self {
		return
	}
	others = p2p.ByDistance(key, others)
	need := min(pin.Replicas-len(holders), len(others))
	if need == 0 {
		p.log.Warn("a pin has fewer replicas than asked and no seed to add", "pin", pin.Key(), "holders", len(holders), "replicas", pin.Replicas)
		return
	}
	for _, s := range others[:need] {
		if err := p.peer.pin(ctx, s, pin); err != nil {
			p.log.Warn("asking a seed to replicate a pin failed", "pin", pin.Key(), "seed", s, "err", err)
			continue
		}
		p.log.Info("asked a seed to replicate a pin", "pin", pin.Key(), "seed", s, "holders", len(holders), "replicas", pin.Replicas)
	}
}
