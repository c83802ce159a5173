// Package seed is the seed role of a Shoal cluster: nodes that pin what they hold, take the
// coordinator role for origin fetches, keep each pinned image on enough seeds, and accept
// pushes. A seed is composed from an agent's public parts (its store, pipeline, resolver, p2p
// node and HTTP surface) plus its own: the hosted repositories (seed/hosted), the replicator and
// the seed protocol, and a /v2 that takes pushes.
package seed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/tags"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/seed/hosted"
)

// Config configures a seed.
type Config struct {
	// Agent is the node's agent configuration; New sets its seed role.
	Agent agent.Config
	// Replicas is the replica count of pins that name none (default 1).
	Replicas int
	// RepairInterval is how often replica counts are checked (default 30 s).
	RepairInterval time.Duration
	// UploadTimeout removes push upload sessions idle this long (default hosted.DefaultUploadTimeout).
	UploadTimeout time.Duration
	// NoDeletes refuses DELETE of pushed manifests, tags and blobs.
	NoDeletes bool
}

// DefaultRepairInterval is how often a seed checks its pins' replica counts.
const DefaultRepairInterval = 30 * time.Second

// Seed is a running seed node.
type Seed struct {
	a      *agent.Agent
	st     *store.Store
	log    *slog.Logger
	pins   *pins.Pins
	rep    *replicator
	peer   *seedPeer
	hosted *hosted.Registry
}

// New builds a seed: an agent advertised as a seed, so that the cluster's nodes pick it as the
// coordinator of origin fetches, which pins what it preheats and what is pushed to it, with the
// admin endpoints and the push API.
func New(cfg Config) (*Seed, error) {
	if cfg.Agent.P2P == nil {
		return nil, errors.New("seed: a seed needs peer-to-peer on")
	}
	if cfg.RepairInterval <= 0 {
		cfg.RepairInterval = DefaultRepairInterval
	}
	p2pCfg := *cfg.Agent.P2P
	p2pCfg.Seed = true
	cfg.Agent.P2P = &p2pCfg
	st, err := agent.OpenStore(cfg.Agent)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	s := &Seed{st: st}
	opts := []hosted.Option{hosted.WithCommitHook(s.announce), hosted.WithDeletes(!cfg.NoDeletes)}
	if cfg.Agent.Logger != nil {
		opts = append(opts, hosted.WithLogger(cfg.Agent.Logger.With("component", "hosted")))
	}
	if cfg.UploadTimeout > 0 {
		opts = append(opts, hosted.WithUploadTimeout(cfg.UploadTimeout))
	}
	if s.hosted, err = hosted.New(st, opts...); err != nil {
		return nil, errors.Join(fmt.Errorf("seed: %w", err), st.Close())
	}
	s.a, err = agent.New(cfg.Agent, agent.WithStore(st), agent.WithHostedTags(hostedTags{s}), agent.WithKeeper(s.hosted))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("seed: %w", err), s.hosted.Close(), st.Close())
	}
	s.log = s.a.Logger().With("component", "seed")
	s.peer = newSeedPeer(s.a.Node(), s.log)
	s.pins = s.a.Pins(cfg.Replicas, s.peer)
	s.rep = newReplicator(s.a, s.pins, s.peer, s.log, cfg.Replicas, cfg.RepairInterval)
	s.peer.serve(s.rep)
	return s, nil
}

// announce advertises content committed to the hosted repositories. Pushes arrive only once
// the seed serves, after New, so the agent is there.
func (s *Seed) announce(d digest.Digest) { s.a.Announce(d) }

// hostedTags answers local resolution and peers resolving a pushed tag: the newer of this seed's
// own push and a pin of a pushed image it holds as a replica.
type hostedTags struct{ s *Seed }

func (h hostedTags) HostedTag(repo, tag string) (tags.Record, bool) {
	d, mt, at, ok := h.s.hosted.ResolveTag(repo, tag)
	if pin, pinned := pins.Lookup(h.s.st, pins.KeyOf(true, repo+":"+tag)); pinned && pin.MediaType != "" && (!ok || pin.Created.After(at)) {
		return tags.Record{Digest: pin.Digest, MediaType: pin.MediaType, Resolved: pin.Created}, true
	}
	return tags.Record{Digest: d, MediaType: mt, Resolved: at}, ok
}

// Agent returns the seed's agent.
func (s *Seed) Agent() *agent.Agent { return s.a }

// Pins returns the seed's pins.
func (s *Seed) Pins() *pins.Pins { return s.pins }

// v2 is the seed's /v2 server: the hosted namespace from the hosted repositories (or the
// cluster), every other ns from the agent's upstreams, and pushes.
// Serve puts it in the agent's surface with the admin endpoints (where a preheat pins).
func (s *Seed) v2() *registryapi.Server {
	p := &pinningPusher{Registry: s.hosted, s: s}
	fe := &frontend{hosted: s.hosted, agent: s.a}
	return registryapi.New(fe, registryapi.WithLogger(s.a.Logger()), registryapi.WithRegisterer(s.a.Registerer()),
		registryapi.WithPush(p))
}

// Run serves on the agent's listen address until ctx ends, repairing replica counts in the
// background, then closes the seed.
func (s *Seed) Run(ctx context.Context) error {
	ln, err := s.a.Listen()
	if err != nil {
		s.closeRole()
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened.
func (s *Seed) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.rep.run(ctx) }()
	go func() { defer wg.Done(); _ = s.hosted.Run(ctx) }() // returns nil when ctx ends
	// The role's background work stops first (replica fetches go through the agent's pipeline),
	// then the agent, then what the seed owns: the hosted index and the store.
	stopped := make(chan struct{})
	go func() {
		<-ctx.Done()
		s.rep.close()
		s.peer.close()
		close(stopped)
	}()
	h := s.a.Surface(s.v2(), pins.NewAdmin(s.pins, true).Routes())
	err := s.a.ServeHandler(ctx, ln, h)
	cancel()
	<-stopped
	wg.Wait()
	if cerr := s.closeOwned(); cerr != nil && err == nil {
		err = fmt.Errorf("seed: %w", cerr)
	}
	return err
}

// closeRole closes a seed that never served.
func (s *Seed) closeRole() {
	s.rep.close()
	s.peer.close()
	if err := s.closeOwned(); err != nil {
		s.log.Warn("closing the seed", "err", err)
	}
}

func (s *Seed) closeOwned() error {
	return errors.Join(s.hosted.Close(), s.st.Close())
}
