package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchorigin"
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
	"github.com/shoal-oci/shoal/test/bench/internal/benchruntime"
)

// seedRun is what the seeded scenario adds to a run: one `shoal seed` process that the agents
// bootstrap from, warmed with `shoal preheat` while the origin is up, and serving the rollout
// alone once the origin is stopped.
type seedRun struct {
	proc *benchproc.Shoal
	ref  string // what was preheated: <origin host>/<repo>:<tag>

	preheat       time.Duration      // `shoal preheat` started → it exited successfully
	resolved      time.Duration      // → its "resolved" line (the manifest is in, the totals known)
	preheatOrigin benchorigin.Counts // what the origin served during the preheat
	preheatOut    string             // the command's output
	refused       bool               // after the stop, a connection to the origin was refused

	// Over the pulls, measured like an agent's.
	cpu                     time.Duration
	hwm                     int64
	servedPeers, fromOrigin int64
	originReqs, originErr   int64 // its requests to the origin, and the failed ones (preheat included)
	staleTags               int64 // tags it answered from its last resolution (for itself or as coordinator)
	exitErr                 string
}

// startSeed starts the scenario's seed: `shoal seed` with an agent's flags (the same link rates),
// the origin as its registry, the benchmark's seed authority key, and a known peer ID for the
// agents' --bootstrap.
func (e *env) startSeed(ctx context.Context, dir string) (*seedRun, error) {
	p, err := e.startAgent(ctx, dir, -1, agentOpts{seed: true, p2p: true, needID: true, seeded: true})
	if err != nil {
		return nil, err
	}
	host := strings.TrimPrefix(e.o.URL(), "http://")
	return &seedRun{proc: p, ref: fmt.Sprintf("%s/%s:%s", host, benchruntime.Repository, benchruntime.Tag)}, nil
}

// preheat runs `shoal preheat --seed <seed> <ref>` (the operator's command, from the build under
// test) and records how long it took and what the origin served meanwhile.
func (e *env) preheat(ctx context.Context, sr *seedRun) error {
	o0 := e.o.Counts()
	cmd := exec.CommandContext(ctx, e.bin, "preheat", "--seed", strings.TrimPrefix(sr.proc.URL, "http://"), sr.ref)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr := &benchproc.Output{Limit: 64 << 10}
	cmd.Stderr = stderr
	t := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	var out strings.Builder
	var rd sync.WaitGroup
	rd.Go(func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			if sr.resolved == 0 && strings.Contains(l, " resolved to ") {
				sr.resolved = time.Since(t)
			}
			fmt.Fprintf(&out, "%6.2f s  %s\n", time.Since(t).Seconds(), l)
		}
	})
	rd.Wait() // before Wait, which closes the pipe
	err = cmd.Wait()
	sr.preheat = time.Since(t)
	sr.preheatOut = out.String()
	sr.preheatOrigin = e.o.Counts().Since(o0)
	if err != nil {
		return fmt.Errorf("shoal preheat %s: %v\n%s%s", sr.ref, err, sr.preheatOut, stderr.String())
	}
	if !strings.Contains(sr.preheatOut, "pinned "+sr.ref+"@"+e.im.Digest) {
		return fmt.Errorf("shoal preheat printed no summary naming %s@%s:\n%s", sr.ref, e.im.Digest, sr.preheatOut)
	}
	return nil
}

// stopOrigin closes the origin's listener and checks that a connection to it is now refused, so
// that every origin request of the agents fails at once rather than waiting on a timeout.
func (e *env) stopOrigin(sr *seedRun) error {
	e.o.Close()
	host := strings.TrimPrefix(e.o.URL(), "http://")
	c, err := net.DialTimeout("tcp", host, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("the origin at %s still accepts connections after it was stopped", host)
	}
	sr.refused = errors.Is(err, syscall.ECONNREFUSED)
	return nil
}
