package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

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
	opts := benchproc.Options{Name: fmt.Sprintf("agent %d", index), DataDir: dir, Registries: []string{e.o.URL()},
		LogLevel: e.cfg.agentLog, P2P: benchproc.P2POff, Bootstrap: o.bootstrap, PeerID: o.needID, Debug: o.debug}
	if o.seed {
		opts.Command, opts.Name = "seed", "seed"
	}
	if o.p2p {
		opts.P2P = benchproc.P2PLoopback
	}
	if e.cfg.link > 0 {
		r := strconv.FormatInt(e.cfg.link, 10)
		opts.Args = []string{"--max-upload-rate", r, "--max-download-rate", r}
	}
	if o.seeded {
		opts.Args = append(opts.Args, e.authority.Args(o.seed)...)
	}
	opts.Args = append(opts.Args, e.cfg.agentArgs...)
	return benchproc.Start(ctx, e.bin, opts)
}

// machineCPU is the machine-wide CPU time from /proc/stat: busy (everything but idle and
// iowait), iowait and the total, all in clock ticks.
type machineCPU struct{ busy, iowait, total int64 }

func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return machineCPU{}
	}
	var m machineCPU
	for i, s := range f[1:] {
		if i >= 8 { // guest time is already counted in user
			break
		}
		v, _ := strconv.ParseInt(s, 10, 64)
		m.total += v
		switch i {
		case 3: // idle
		case 4:
			m.iowait += v
		default:
			m.busy += v
		}
	}
	return m
}

func (m machineCPU) sub(o machineCPU) machineCPU {
	return machineCPU{busy: m.busy - o.busy, iowait: m.iowait - o.iowait, total: m.total - o.total}
}
