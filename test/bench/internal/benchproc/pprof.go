package benchproc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Profiler writes profiles of shoal processes started with Options.Debug into Dir, best effort:
// a failure is logged, never fatal. With Dir "" it does nothing.
type Profiler struct {
	Dir     string
	Written []string // the files written, in order

	mu  sync.Mutex
	cpu map[*Shoal]cpuRun
}

type cpuRun struct {
	p    *CPUProfile
	file string
}

// On reports whether profiles are taken: whether the processes need Options.Debug.
func (p *Profiler) On() bool { return p.Dir != "" }

// StartCPU starts a CPU profile of s, which StopCPU writes to Dir/file.
func (p *Profiler) StartCPU(ctx context.Context, s *Shoal, file string) {
	if p.Dir == "" || s.Debug == "" {
		return
	}
	c, err := StartCPUProfile(ctx, s.Debug)
	if err != nil {
		Logf("pprof %s: %v", file, err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cpu == nil {
		p.cpu = map[*Shoal]cpuRun{}
	}
	p.cpu[s] = cpuRun{c, file}
}

// StopCPU ends the CPU profile of s that StartCPU started, and writes it.
func (p *Profiler) StopCPU(s *Shoal) {
	p.mu.Lock()
	r, ok := p.cpu[s]
	delete(p.cpu, s)
	p.mu.Unlock()
	if ok {
		b, err := r.p.Stop()
		p.write(r.file, b, err)
	}
}

// Save writes the profile /debug/pprof/NAME of s (heap, allocs, …) to Dir/file.
func (p *Profiler) Save(ctx context.Context, s *Shoal, name, file string) {
	if p.Dir == "" || s.Debug == "" {
		return
	}
	b, err := Profile(ctx, s.Debug, name)
	p.write(file, b, err)
}

func (p *Profiler) write(file string, b []byte, err error) {
	path := filepath.Join(p.Dir, file)
	if err == nil {
		err = os.MkdirAll(p.Dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		Logf("pprof %s: %v", file, err)
		return
	}
	p.mu.Lock()
	p.Written = append(p.Written, path)
	p.mu.Unlock()
	Logf("pprof: wrote %s", path)
}

// CPUProfile is a CPU profile being taken of a process that serves Go's net/http/pprof (a shoal
// process with --debug-listen), covering exactly the time from StartCPUProfile to Stop.
//
// net/http/pprof has no "stop" request: /debug/pprof/profile runs for ?seconds=, but it ends
// early when the request's context does, and net/http ends that context when the client's side
// of the connection closes. So the profile is asked for with a long duration on a connection of
// its own, and Stop closes the connection for writing only: the server sees the end of the
// request stream, the profile stops, and the answer comes back on the half still open.
type CPUProfile struct {
	conn *net.TCPConn
	req  *http.Request
}

// StartCPUProfile starts a CPU profile of the process whose pprof listener is at addr
// (host:port). The profile runs from when the request arrives, a fraction of a millisecond on
// loopback.
func StartCPUProfile(ctx context.Context, addr string) (*CPUProfile, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/profile?seconds=3600", nil)
	if err == nil {
		err = req.Write(c)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return &CPUProfile{conn: c.(*net.TCPConn), req: req}, nil
}

// Stop ends the profile and returns it (a gzipped pprof protocol buffer).
func (p *CPUProfile) Stop() ([]byte, error) {
	defer p.conn.Close()
	if err := p.conn.CloseWrite(); err != nil {
		return nil, err
	}
	_ = p.conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(p.conn), p.req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s: %s", p.req.URL.Path, resp.Status, b)
	}
	return b, err
}

// Profile GETs one of the profiles at /debug/pprof/NAME (heap, allocs, goroutine, …) of the
// process whose pprof listener is at addr.
func Profile(ctx context.Context, addr, name string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/"+name, nil)
	resp, err := apiClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s: %s", req.URL.Path, resp.Status, b)
	}
	return b, err
}
