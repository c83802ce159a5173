package main

import (
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"

	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
)

// profiler collects CPU and heap profiles of the agent when -pprof is set (the agent is then
// ./test/bench/mirror/profagent, which serves pprof on --debug-listen). Without -pprof every
// method does nothing. Profiling is best effort: a failure is logged, never fatal.
type profiler struct {
	dir   string
	debug string // base URL of the current agent's debug listener
}

func newProfiler(dir string) *profiler { return &profiler{dir: dir} }

// agentArgs returns the extra agent flags, choosing a debug address for the next agent.
func (p *profiler) agentArgs() []string {
	if p.dir == "" {
		return nil
	}
	addr, err := benchproc.FreeAddr()
	if err != nil {
		logf("pprof: %v", err)
		return nil
	}
	p.debug = "http://" + addr
	return []string{"--debug-listen", addr}
}

func (p *profiler) post(ctx context.Context, path string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.debug+path, nil)
	if path == "/debug/pprof/heap" || path == "/debug/pprof/allocs" {
		req.Method = http.MethodGet
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s: %s", path, resp.Status, b)
	}
	return b, err
}

func (p *profiler) start(ctx context.Context, _ *agentProc, name string) {
	if p.dir == "" {
		return
	}
	if _, err := p.post(ctx, "/debug/cpu/start"); err != nil {
		logf("pprof %s: %v", name, err)
	}
}

func (p *profiler) stop(ctx context.Context, _ *agentProc, name string) {
	if p.dir == "" {
		return
	}
	p.save(ctx, "/debug/cpu/stop", "agent-"+name+".cpu.pprof")
}

func (p *profiler) heap(ctx context.Context, _ *agentProc, name string) {
	if p.dir == "" {
		return
	}
	p.save(ctx, "/debug/pprof/heap", "agent-"+name+".heap.pprof")
	p.save(ctx, "/debug/pprof/allocs", "agent-"+name+".allocs.pprof")
}

func (p *profiler) save(ctx context.Context, path, file string) {
	b, err := p.post(ctx, path)
	if err == nil {
		err = os.WriteFile(filepath.Join(p.dir, file), b, 0o644)
	}
	if err != nil {
		logf("pprof %s: %v", file, err)
		return
	}
	logf("pprof: wrote %s", filepath.Join(p.dir, file))
}
