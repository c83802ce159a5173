// Package seed is the origin side of a Shoal cluster: seed nodes, which pin what they hold, take
// the coordinator role for origin fetches, keep each pinned image on enough seeds, and accept
// pushes; and the preheat and pin operations that warm a cluster before a rollout.
package seed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/store"
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
	log    *slog.Logger
	pins   *Pins
	admin  *Admin
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
	a, err := agent.New(cfg.Agent)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	log := a.Logger().With("component", "seed")
	s := &Seed{a: a, log: log}
	s.pins = newPins(a, log, cfg.Replicas, cfg.RepairInterval)
	s.peer = newSeedPeer(a.Node(), s.pins, log)
	s.pins.peer = s.peer
	s.admin = &Admin{a: a, pins: s.pins, pinOnPreheat: true}
	opts := []hosted.Option{hosted.WithLogger(a.Logger().With("component", "hosted")), hosted.WithFallback(a),
		hosted.WithCommitHook(a.Announce), hosted.WithDeletes(!cfg.NoDeletes)}
	if cfg.UploadTimeout > 0 {
		opts = append(opts, hosted.WithUploadTimeout(cfg.UploadTimeout))
	}
	if s.hosted, err = hosted.New(a.Store(), opts...); err != nil {
		a.Close()
		return nil, fmt.Errorf("seed: %w", err)
	}
	pusher := &pinningPusher{Registry: s.hosted, s: s}
	a.Extend(agent.Extension{
		Frontend:        pusher,
		FrontendOptions: []registryapi.Option{registryapi.WithPush(pusher)},
		HostedTags:      s.hostedTag,
		Keep:            s.hosted.Referenced,
		Routes:          s.admin.Routes(),
		OnClose: func() {
			// Before the agent closes its store: no new replicas, and background work done.
			s.peer.close()
			s.pins.close()
		},
	})
	return s, nil
}

// hostedTag answers peers resolving a pushed tag: the newer of this seed's own push and a pin of
// a pushed image it holds as a replica.
func (s *Seed) hostedTag(repo, tag string) (digest.Digest, string, time.Time, bool) {
	d, mt, at, ok := s.hosted.ResolveTag(repo, tag)
	if pin, pinned := s.a.Store().Pin(store.PinKey(true, repo+":"+tag)); pinned && pin.MediaType != "" && (!ok || pin.Created.After(at)) {
		return pin.Digest, pin.MediaType, pin.Created, true
	}
	return d, mt, at, ok
}

// Agent returns the seed's agent.
func (s *Seed) Agent() *agent.Agent { return s.a }

// Pins returns the seed's pins.
func (s *Seed) Pins() *Pins { return s.pins }

// Run serves on the agent's listen address until ctx ends, repairing replica counts in the
// background, then closes the seed.
func (s *Seed) Run(ctx context.Context) error {
	return s.serve(ctx, func(ctx context.Context) error { return s.a.Run(ctx) })
}

// Serve is Run on a listener the caller opened.
func (s *Seed) Serve(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, func(ctx context.Context) error { return s.a.Serve(ctx, ln) })
}

func (s *Seed) serve(ctx context.Context, run func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{}, 2)
	go func() { defer func() { done <- struct{}{} }(); s.pins.run(ctx) }()
	go func() { defer func() { done <- struct{}{} }(); _ = s.hosted.Run(ctx) }()
	err := run(ctx)
	cancel()
	<-done
	<-done
	if cerr := s.hosted.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("seed: %w", cerr)
	}
	return err
}
