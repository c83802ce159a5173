package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
)

// agentOpts are the per-process choices of startAgent; the rest (the origin as registry, the
// link rates, the log level, -agent-args) is the same for every process.
type agentOpts struct {
	seed      bool // run `shoal seed` instead of `shoal agent` (same flags)
	p2p       bool
	bootstrap []string
	needID    bool // learn the peer ID first (`shoal id`), for others' --bootstrap
	debug     bool // serve pprof on a free port
	// seeded: the cluster has a seed, authorized by the benchmark's seed authority, which every
	// node trusts (a seed signs with it).
	seeded bool
}

// startAgent starts node index (`shoal agent`, or `shoal seed` with o.seed) with data directory
// dir, pulling through the origin, and waits until it is ready.
func (e *env) startAgent(ctx context.Context, dir string, index int, o agentOpts) (*benchproc.Shoal, error) {
	opts := benchproc.Options{Name: fmt.Sprintf("agent %d", index), DataDir: dir, Registries: []string{e.origin.URL()},
		LogLevel: e.cfg.agentLog, P2P: benchproc.P2POff, Bootstrap: o.bootstrap, PeerID: o.needID, Debug: o.debug}
	if o.seed {
		opts.Command, opts.Name = "seed", "seed"
	}
	if o.p2p {
		opts.P2P = benchproc.P2PLoopback
	}
	if e.lab != nil { // tbf shapes its link
		if err := e.lab.AgentOptions(e.bin, index, &opts); err != nil {
			return nil, err
		}
	} else if e.cfg.link > 0 {
		r := strconv.FormatInt(e.cfg.link, 10)
		opts.Args = []string{"--max-upload-rate", r, "--max-download-rate", r}
	}
	if o.seeded {
		opts.Args = append(opts.Args, e.authority.Args(o.seed)...)
	}
	opts.Args = append(opts.Args, e.cfg.agentArgs...)
	return benchproc.Start(ctx, e.bin, opts)
}
