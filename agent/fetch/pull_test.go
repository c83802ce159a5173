package fetch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

// pipeSource hands out each blob as a pipe the test writes: a fetch stays under way until the
// test finishes it.
type pipeSource struct {
	mu    sync.Mutex
	pipes map[digest.Digest]*io.PipeWriter
}

func (*pipeSource) Name() string { return "origin" }

func (s *pipeSource) FetchBlob(_ context.Context, _ Target, d digest.Digest, _, _ int64) (io.Closer, int64, error) {
	r, w := io.Pipe()
	s.mu.Lock()
	s.pipes[d] = w
	s.mu.Unlock()
	return r, 4, nil
}

func (s *pipeSource) finish(d digest.Digest, data []byte) {
	s.mu.Lock()
	w := s.pipes[d]
	s.mu.Unlock()
	go func() { w.Write(data); w.Close() }()
}

func (s *pipeSource) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.pipes {
		w.CloseWithError(io.ErrUnexpectedEOF)
	}
}

func testMetrics() Metrics {
	return Metrics{
		Duration:       prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "d"}, []string{"source"}),
		Bytes:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "b"}, []string{"source"}),
		VerifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "v"}, []string{"source"}),
		InFlight:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "i"}),
	}
}

// Pull runs at most MaxPulls new origin fetches for peers at once: past the cap it declines at
// once with ErrBusy (answered busy to the peer), while joining a fetch under way stays free and a
// local client's fetch is never capped.
func TestPullCap(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := &pipeSource{pipes: map[digest.Digest]*io.PipeWriter{}}
	p := New(Deps{Store: st, Sources: []Source{src}, Origin: src, MaxPulls: 2, Log: slog.New(slog.DiscardHandler),
		Metrics: testMetrics()})
	t.Cleanup(func() { src.closeAll(); p.Close(); st.Close() })
	blob := func(s string) ([]byte, digest.Digest) { b := []byte(s); return b, digest.FromBytes(b) }
	b1, d1 := blob("aaaa")
	_, d2 := blob("bbbb")
	_, d3 := blob("cccc")
	_, d4 := blob("dddd")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, d := range []digest.Digest{d1, d2} {
		if err := p.Pull(ctx, Target{}, d); err != nil {
			t.Fatalf("pull %s: %v", d, err)
		}
	}
	if err := p.Pull(ctx, Target{}, d3); !errors.Is(err, ErrBusy) || !errors.Is(err, errdefs.ErrTooManyRequests) {
		t.Fatalf("a third pull past the cap of 2: %v, want ErrBusy", err)
	}
	if err := p.Pull(ctx, Target{}, d1); err != nil {
		t.Fatalf("joining a pull under way: %v", err)
	}
	b, err := p.OpenBlob(ctx, Target{}, d4) // a local client is not capped
	if err != nil {
		t.Fatalf("a local client's fetch at the cap: %v", err)
	}
	b.Close()

	src.finish(d1, b1)
	deadline := time.Now().Add(10 * time.Second)
	for p.InFlight(d1) {
		if time.Now().After(deadline) {
			t.Fatal("the first fetch never ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Pull(ctx, Target{}, d3); err != nil {
		t.Fatalf("a pull once a slot is free: %v", err)
	}
}
