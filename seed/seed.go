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

	"github.com/shoal-oci/shoal/agent"
)

// Config configures a seed.
type Config struct {
	// Agent is the node's agent configuration; New sets its seed role.
	Agent agent.Config
	// Replicas is the replica count of pins that name none (default 1).
	Replicas int
	// RepairInterval is how often replica counts are checked (default 30 s).
	RepairInterval time.Duration
}

// DefaultRepairInterval is how often a seed checks its pins' replica counts.
const DefaultRepairInterval = 30 * time.Second

// Seed is a running seed node.
type Seed struct {
	a     *agent.Agent
	log   *slog.Logger
	pins  *Pins
	admin *Admin
	peer  *seedPeer
}

// New builds a seed: an agent whose content is all kept (pinned), advertised as a seed so that
// the cluster's nodes pick it as the coordinator of origin fetches, with the admin endpoints.
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
	cfg.Agent.KeepAll = true
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
	a.Extend(agent.Extension{Routes: s.admin.Routes()})
	return s, nil
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
	done := make(chan struct{})
	go func() { defer close(done); s.pins.run(ctx) }()
	err := run(ctx)
	cancel()
	<-done
	s.peer.close()
	return err
}
