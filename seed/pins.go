package seed

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/registryapi"
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

	// ctx bounds background work (replicas being fetched, pins of pushed tags); close cancels
	// it and waits for wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// adoptSlots bounds the replicas fetched at once for other seeds.
	adoptSlots chan struct{}

	mu sync.Mutex
	// adding holds the pins being fetched for another seed's repair, by key.
	adding map[string]bool
}

// maxAdopting is how many replicas a seed fetches at once for other seeds; past it, it answers
// busy and the asking seed tries again at its next round.
const maxAdopting = 4

func newPins(a *agent.Agent, log *slog.Logger, replicas int, interval time.Duration) *Pins {
	p := &Pins{a: a, log: log, replicas: max(replicas, 1), interval: interval, adding: map[string]bool{},
		adoptSlots: make(chan struct{}, maxAdopting)}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// close stops background work and waits for it; the agent calls it before closing the store.
func (p *Pins) close() {
	p.mu.Lock()
	p.cancel()
	p.mu.Unlock()
	p.wg.Wait()
}

// spawn runs fn in the background unless close has begun, reporting whether it did.
func (p *Pins) spawn(fn func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return false
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); fn() }()
	return true
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
	if _, err := p.a.Store().PutPin(pin); err != nil {
		return store.Pin{}, err
	}
	p.log.Info("pinned", "ref", pin.Ref, "digest", pin.Digest, "objects", len(pin.Digests), "bytes", pin.Bytes, "replicas", pin.Replicas)
	return pin, nil
}

// maxReplicas bounds a pin's replica count.
const maxReplicas = 64

// Remove unpins ref here and, on a seed, on every seed that holds it, so that repair does not
// bring it back. ref is an image reference as pinned, or repo:tag of a pushed image. It reports
// whether any node had the pin.
func (p *Pins) Remove(ctx context.Context, ref string) (bool, error) {
	keys := pinKeys(ref)
	if len(keys) == 0 {
		return false, fmt.Errorf("pin %q: not an image reference: %w", ref, errdefs.ErrInvalid)
	}
	found := false
	for _, k := range keys {
		ok, err := p.a.Store().DeletePin(k)
		if err != nil {
			return false, err
		}
		if p.peer != nil {
			ok = p.peer.broadcastUnpin(ctx, k) || ok
		}
		if ok {
			found = true
			p.log.Info("unpinned", "pin", k)
		}
	}
	return found, nil
}

// pinKeys are the keys a reference given to `pin rm` may be recorded under: an upstream image's
// normalised reference, and a pushed image's repo:tag.
func pinKeys(ref string) []string {
	var keys []string
	if r, err := ParseRef(ref); err == nil {
		keys = append(keys, store.PinKey(false, r.String()))
	}
	if repo, tag, ok := strings.Cut(ref, ":"); ok && names.ValidRepository(repo) && names.ValidTag(tag) {
		keys = append(keys, store.PinKey(true, ref))
	}
	return keys
}

// List returns the pins of this node.
func (p *Pins) List() ([]store.Pin, error) { return p.a.Store().Pins() }

// holding is what a seed holds of a pin: nothing, or a digest chosen at a time.
type holding struct {
	Known   bool          `json:"known"`
	Digest  digest.Digest `json:"digest,omitempty"`
	Created time.Time     `json:"created"`
}

func (p *Pins) holding(key string) holding {
	pin, ok := p.a.Store().Pin(key)
	if !ok {
		return holding{}
	}
	return holding{Known: true, Digest: pin.Digest, Created: pin.Created}
}

// adopt pins a pin record another seed sent for repair, in the background: it fetches the same
// content by digest (from peers; the origin may be down) and records the pin, unless this node
// holds a newer pin of the same reference. It returns at once; errdefs.ErrUnavailable when it
// is fetching as many replicas as it takes at a time.
func (p *Pins) adopt(pin store.Pin) error {
	if err := validPin(pin); err != nil {
		return err
	}
	if cur, ok := p.a.Store().Pin(pin.Key()); ok && (cur.Digest == pin.Digest || cur.Created.After(pin.Created)) {
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
		ctx, cancel := context.WithTimeout(p.ctx, adoptTimeout)
		defer cancel()
		got, err := p.fetchPinned(ctx, pin)
		if err != nil {
			p.log.Warn("replicating a pin failed", "pin", pin.Key(), "digest", pin.Digest, "err", err)
			return
		}
		pin.Digests, pin.Manifests, pin.Bytes = got.Digests, got.Manifests, got.Bytes
		put, err := p.a.Store().PutPin(pin)
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
func (p *Pins) fetchPinned(ctx context.Context, pin store.Pin) (store.Pin, error) {
	req := PreheatRequest{Platforms: pin.Platforms, AllPlatforms: pin.AllPlatforms}
	platforms, err := parsePlatforms(req)
	if err != nil {
		return store.Pin{}, err
	}
	ref := Ref{Registry: pin.Registry, Repo: pin.Repo, Digest: pin.Digest}
	t := registryapi.Target{Repo: pin.Repo}
	if !pin.Hosted {
		if t, err = p.a.Target(pin.Registry, pin.Repo); err != nil {
			return store.Pin{}, err
		}
	}
	return fetchImage(ctx, p.a, t, ref, platforms, req, func(Progress) {})
}

func validPin(pin store.Pin) error {
	bad := func() error { return fmt.Errorf("pin record of %q is inconsistent: %w", pin.Ref, errdefs.ErrInvalid) }
	if pin.Digest.Validate() != nil || pin.Replicas < 0 || pin.Replicas > maxReplicas || len(pin.Platforms) > 64 {
		return bad()
	}
	if pin.Hosted {
		if pin.Registry != "" || !names.ValidRepository(pin.Repo) || !names.ValidTag(pin.Tag) || pin.Ref != pin.Repo+":"+pin.Tag {
			return bad()
		}
		return nil
	}
	r, err := ParseRef(pin.Ref)
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
func (p *Pins) run(ctx context.Context) {
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
func (p *Pins) repairAll(ctx context.Context) {
	pins, err := p.List()
	if err != nil {
		p.log.Error("listing pins", "err", err)
		return
	}
	var keys []string
	for _, pin := range pins {
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
	for _, pin := range pins {
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
func (p *Pins) repair(ctx context.Context, pin store.Pin, held map[peer.ID]map[string]holding) {
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
