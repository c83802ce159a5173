package cleanup

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeResolver answers each lookup with the next of its answers (the last one repeats), the way
// a headless Service's DNS name grows as cleanup pods get addresses.
type fakeResolver struct {
	mu      sync.Mutex
	answers [][]string
	err     error
	calls   int
}

func (r *fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.err != nil {
		return nil, &net.DNSError{Err: r.err.Error(), Name: host, IsNotFound: true}
	}
	ans := r.answers[min(r.calls-1, len(r.answers)-1)]
	var out []net.IPAddr
	for _, a := range ans {
		out = append(out, net.IPAddr{IP: net.ParseIP(a)})
	}
	return out, nil
}

// pod is one cleanup pod: a real Serve on 127.0.0.x:port whose removal finishes when release is
// closed (or at once).
type pod struct {
	ip      string
	release chan struct{}
	probes  atomic.Int64 // health requests seen
}

// startPods starts a Serve on each of ips, all on one port (as pods of a DaemonSet share theirs),
// and stops them at the end of the test.
func startPods(t *testing.T, ips []string, blocked map[string]bool) (string, map[string]*pod) {
	t.Helper()
	port := ""
	pods := map[string]*pod{}
	for _, ip := range ips {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, cmp(port, "0")))
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ = net.SplitHostPort(ln.Addr().String())
		p := &pod{ip: ip, release: make(chan struct{})}
		if !blocked[ip] {
			close(p.release)
		}
		pods[ip] = p
		counting := &countingListener{Listener: ln, p: p}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- Serve(ctx, counting, ServeOptions{Remove: func() error {
				select {
				case <-p.release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}})
		}()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Serve on %s: %v", ip, err)
			}
		})
	}
	return port, pods
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// countingListener counts the connections a pod accepts: one per probe (each probe is a new
// request; keep-alive may reuse, so the count is a lower bound of rounds probed).
type countingListener struct {
	net.Listener
	p *pod
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.p.probes.Add(1)
	}
	return c, err
}

// noKeepAlive makes every probe a new connection, so the pods' counts are rounds.
func noKeepAlive() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

func waitCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestWaitAllDone(t *testing.T) {
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	port, pods := startPods(t, ips, nil)
	r := &fakeResolver{answers: [][]string{ips}}
	err := Wait(waitCtx(t, time.Minute), WaitOptions{Endpoint: "shoal-cleanup.ns.svc:" + port, Resolver: r,
		Client: noKeepAlive(), Interval: 5 * time.Millisecond, Rounds: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range ips {
		if n := pods[ip].probes.Load(); n < 3 {
			t.Errorf("%s probed %d times, want every one of 3 rounds", ip, n)
		}
	}
}

// A pod whose removal has not finished answers 503: Wait keeps waiting, and returns once it is done.
func TestWaitForSlowPod(t *testing.T) {
	ips := []string{"127.0.0.1", "127.0.0.2"}
	port, pods := startPods(t, ips, map[string]bool{"127.0.0.2": true})
	slow := pods["127.0.0.2"]
	r := &fakeResolver{answers: [][]string{ips}}
	res := make(chan error, 1)
	go func() {
		res <- Wait(waitCtx(t, time.Minute), WaitOptions{Endpoint: "cleanup:" + port, Resolver: r,
			Client: noKeepAlive(), Interval: 5 * time.Millisecond, Rounds: 2})
	}()
	// Let the slow pod be probed (and answer 503) a few times before it finishes.
	for i := 0; slow.probes.Load() < 3; i++ {
		select {
		case err := <-res:
			t.Fatalf("Wait returned %v before the slow pod was done", err)
		case <-time.After(5 * time.Millisecond):
		}
		if i > 12000 {
			t.Fatal("the slow pod was never probed")
		}
	}
	close(slow.release)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

// An address that appears late restarts the count: Wait returns only after rounds that all saw it.
func TestWaitRestartsWhenPodsAppear(t *testing.T) {
	ips := []string{"127.0.0.1", "127.0.0.2"}
	port, pods := startPods(t, ips, nil)
	r := &fakeResolver{answers: [][]string{{"127.0.0.1"}, {"127.0.0.1"}, ips}}
	err := Wait(waitCtx(t, time.Minute), WaitOptions{Endpoint: "cleanup:" + port, Resolver: r,
		Client: noKeepAlive(), Interval: 5 * time.Millisecond, Rounds: 3})
	if err != nil {
		t.Fatal(err)
	}
	if n := pods["127.0.0.2"].probes.Load(); n < 3 {
		t.Errorf("the late pod was probed %d times; Wait must count 3 rounds that include it", n)
	}
	if r.calls < 5 {
		t.Errorf("%d lookups; want 2 with one pod, then 3 with both", r.calls)
	}
}

// Bad ends: nothing listening, a name that does not resolve, a pod that never finishes. Each
// fails when the context ends, with ErrNotDone and the reason.
func TestWaitFailsBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, freePort, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close() // nothing listens there now
	blockedPort, _ := startPods(t, []string{"127.0.0.1"}, map[string]bool{"127.0.0.1": true})
	for _, tc := range []struct {
		name     string
		endpoint string
		resolver Resolver
		want     string
	}{
		{name: "refused", endpoint: "cleanup:" + freePort, resolver: &fakeResolver{answers: [][]string{{"127.0.0.1"}}},
			want: "1 of 1 cleanup pods not done: Get \"http://127.0.0.1:" + freePort + "/healthz\""},
		{name: "no such name", endpoint: "cleanup:" + freePort, resolver: &fakeResolver{err: errors.New("no such host")},
			want: "looking up cleanup"},
		{name: "no address", endpoint: "cleanup:" + freePort, resolver: &fakeResolver{answers: [][]string{{}}},
			want: "no cleanup pod has started"},
		{name: "not finished", endpoint: "cleanup:" + blockedPort, resolver: &fakeResolver{answers: [][]string{{"127.0.0.1"}}},
			want: "503 Service Unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Wait(waitCtx(t, 500*time.Millisecond), WaitOptions{Endpoint: tc.endpoint, Resolver: tc.resolver,
				Interval: 10 * time.Millisecond})
			if !errors.Is(err, ErrNotDone) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrNotDone saying %q", err, tc.want)
			}
		})
	}
	for _, bad := range []string{"cleanup", ":9403", "cleanup:"} {
		if err := Wait(waitCtx(t, time.Second), WaitOptions{Endpoint: bad}); err == nil || errors.Is(err, ErrNotDone) {
			t.Errorf("endpoint %q: %v, want refused at once", bad, err)
		}
	}
}

// Serve answers 503 until the removal succeeded, then 200; a failed removal ends it with the error
// and never answers done.
func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + HealthPath
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, ServeOptions{Remove: func() error { <-release; return nil }})
	}()
	if code := get(t, url); code != http.StatusServiceUnavailable {
		t.Errorf("before the removal: %d, want 503", code)
	}
	close(release)
	for i := 0; get(t, url) != http.StatusOK; i++ {
		if i > 2000 {
			t.Fatal("never answered done")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}

	// Bounded by For, without any cancel.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := Serve(context.Background(), ln2, ServeOptions{Remove: func() error { return nil }, For: 10 * time.Millisecond}); err != nil {
		t.Errorf("Serve with For: %v", err)
	}

	ln3, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("permission denied")
	if err := Serve(context.Background(), ln3, ServeOptions{Remove: func() error { return boom }}); !errors.Is(err, boom) {
		t.Errorf("failed removal: %v, want its error", err)
	}
	if c, err := net.Dial("tcp", ln3.Addr().String()); err == nil {
		c.Close()
		t.Error("still listening after a failed removal")
	}
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := noKeepAlive().Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
