package seed

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/p2p"
)

// Pins manages a node's pins: images whose content garbage collection never evicts. On a seed it
// also keeps each pin's replica count: the seeds holding a pin check, every RepairInterval, how
// many live seeds hold it, and the one XOR-closest to the pin's digest asks seeds that lack it to
// pin it too, until Replicas seeds hold it.
type Pins struct {
	a    *agent.Agent
	log  *slog.Logger
	peer *seedPeer // nil on a node that is not a seed
	// replicas is the replica count of a pin that names none.
	replicas int
	interval time.Duration

	// lifetime bounds background work (replicas being fetched); set by run.
	lifetime context.Context

	mu sync.Mutex
	// adding holds the pins being fetched for another seed's repair, by ref.
	adding map[string]bool
}

func newPins(a *agent.Agent, log *slog.Logger, replicas int, interval time.Duration) *Pins {
	return &Pins{a: a, log: log, replicas: max(replicas, 1), interval: interval, adding: map[string]bool{},
		lifetime: context.Background()}
}

// Add fetches the image and pins it, reporting progress. The pin is recorded only once every
// piece of its content is committed.
func (p *Pins) Add(ctx context.Context, req PreheatRequest, report func(Progress)) (store.Pin, error) {
	if req.Replicas < 0 || req.Replicas > maxReplicas {
		return store.Pin{}, fmt.Errorf("replicas %d: want 1 to %d: %w", req.Replicas, maxReplicas, errdefs.ErrInvalid)
	}
	pin, err := Preheat(ctx, p.a, req, report)
	if err != nil {
		return store.Pin{}, err
	}
	if pin.Replicas == 0 {
		pin.Replicas = p.replicas
	}
	if err := p.a.Store().PutPin(pin); err != nil {
		return store.Pin{}, err
	}
	p.log.Info("pinned", "ref", pin.Ref, "digest", pin.Digest, "objects", len(pin.Digests), "bytes", pin.Bytes, "replicas", pin.Replicas)
	return pin, nil
}

// maxReplicas bounds a pin's replica count.
const maxReplicas = 64

// Remove unpins ref here and, on a seed, on every seed that holds it, so that repair does not
// bring it back. It reports whether this node had the pin.
func (p *Pins) Remove(ctx context.Context, ref string) (bool, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return false, err
	}
	found, err := p.a.Store().DeletePin(r.String())
	if err != nil {
		return false, err
	}
	if p.peer != nil {
		found = p.peer.broadcastUnpin(ctx, r.String()) || found
	}
	if found {
		p.log.Info("unpinned", "ref", r.String())
	}
	return found, nil
}

// List returns the pins of this node.
func (p *Pins) List() ([]store.Pin, error) { return p.a.Store().Pins() }

// has reports whether this node holds the pin of ref at digest d.
func (p *Pins) has(ref string, d digest.Digest) bool {
	pin, ok := p.a.Store().Pin(ref)
	return ok && pin.Digest == d
}

// adopt pins a pin record another seed sent for repair, in the background: it fetches the same
// content by digest (from peers; the origin may be down) and records the pin. It returns at once.
func (p *Pins) adopt(pin store.Pin) error {
	if err := validPin(pin); err != nil {
		return err
	}
	if p.has(pin.Ref, pin.Digest) {
		return nil
	}
	p.mu.Lock()
	if p.adding[pin.Ref] {
		p.mu.Unlock()
		return nil
	}
	p.adding[pin.Ref] = true
	p.mu.Unlock()
	go func() {
		defer func() {
			p.mu.Lock()
			delete(p.adding, pin.Ref)
			p.mu.Unlock()
		}()
		byDigest := Ref{Registry: pin.Registry, Repo: pin.Repo, Digest: pin.Digest}
		ctx, cancel := context.WithTimeout(p.lifetime, adoptTimeout)
		defer cancel()
		got, err := Preheat(ctx, p.a, PreheatRequest{Ref: byDigest.String(), Platforms: pin.Platforms, AllPlatforms: pin.AllPlatforms}, func(Progress) {})
		if err != nil {
			p.log.Warn("replicating a pin failed", "ref", pin.Ref, "digest", pin.Digest, "err", err)
			return
		}
		pin.Digests, pin.Bytes, pin.Created = got.Digests, got.Bytes, time.Now().UTC()
		if err := p.a.Store().PutPin(pin); err != nil {
			p.log.Error("recording a replicated pin failed", "ref", pin.Ref, "err", err)
			return
		}
		p.log.Info("pinned a replica for the cluster", "ref", pin.Ref, "digest", pin.Digest, "bytes", pin.Bytes)
	}()
	return nil
}

func validPin(pin store.Pin) error {
	r, err := ParseRef(pin.Ref)
	if err != nil {
		return err
	}
	if r.String() != pin.Ref || pin.Repo != r.Repo || pin.Registry != r.Registry || pin.Digest.Validate() != nil ||
		pin.Replicas < 0 || pin.Replicas > maxReplicas || len(pin.Platforms) > 64 {
		return fmt.Errorf("pin record of %q is inconsistent: %w", pin.Ref, errdefs.ErrInvalid)
	}
	return nil
}

// adoptTimeout bounds fetching a replica.
const adoptTimeout = time.Hour

// run repairs replica counts until ctx ends.
func (p *Pins) run(ctx context.Context) {
	p.mu.Lock()
	p.lifetime = ctx
	p.mu.Unlock()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pins, err := p.List()
		if err != nil {
			p.log.Error("listing pins", "err", err)
			continue
		}
		for _, pin := range pins {
			if ctx.Err() != nil {
				return
			}
			if pin.Replicas > 1 {
				p.repair(ctx, pin)
			}
		}
	}
}

// repair brings one pin up to its replica count, if this seed is the pin's leader: the holder
// XOR-closest to the pin's digest. Every holder computes the same leader from the same seeds, so
// one seed asks, and the ones it asks are the non-holders closest to the digest.
func (p *Pins) repair(ctx context.Context, pin store.Pin) {
	c, err := p2p.DigestCID(pin.Digest)
	if err != nil {
		return
	}
	key := string(c.Hash())
	node := p.a.Node()
	self := node.ID()
	seeds := node.Seeds(ctx)
	holders := []peer.ID{self}
	var others []peer.ID
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range seeds {
		if s == self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			has, err := p.peer.has(ctx, s, pin.Ref, pin.Digest)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				// A seed that cannot answer is neither counted nor asked this round.
			case has:
				holders = append(holders, s)
			default:
				others = append(others, s)
			}
		}()
	}
	wg.Wait()
	if len(holders) >= pin.Replicas {
		return
	}
	leader := holders[0]
	for _, h := range holders[1:] {
		if kb.Closer(h, leader, key) {
			leader = h
		}
	}
	if leader != self {
		return
	}
	slices.SortFunc(others, func(x, y peer.ID) int {
		if kb.Closer(x, y, key) {
			return -1
		}
		return 1
	})
	need := min(pin.Replicas-len(holders), len(others))
	if need == 0 {
		p.log.Warn("a pin has fewer replicas than asked and no seed to add", "ref", pin.Ref, "holders", len(holders), "replicas", pin.Replicas)
		return
	}
	for _, s := range others[:need] {
		if err := p.peer.pin(ctx, s, pin); err != nil {
			p.log.Warn("asking a seed to replicate a pin failed", "ref", pin.Ref, "seed", s, "err", err)
			continue
		}
		p.log.Info("asked a seed to replicate a pin", "ref", pin.Ref, "seed", s, "holders", len(holders), "replicas", pin.Replicas)
	}
}
