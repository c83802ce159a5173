package benchproc

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A CPU profile asked for an hour ends when Stop half-closes its connection, and comes back whole.
func TestCPUProfileStops(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	start := time.Now()
	p, err := StartCPUProfile(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for time.Since(start) < 300*time.Millisecond { // something to sample
	}
	b, err := p.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the profile took %s: Stop did not end it", d)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a gzipped profile (%d bytes): %v", len(b), err)
	}
	if raw, err := io.ReadAll(zr); err != nil || len(raw) == 0 {
		t.Fatalf("profile: %d bytes, %v", len(raw), err)
	}
}

func TestMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `# HELP shoal_fetched_bytes_total Blob bytes.
# TYPE shoal_fetched_bytes_total counter
shoal_fetched_bytes_total{source="origin"} 100
shoal_fetched_bytes_total{source="peer"} 28
shoal_origin_errors_total{op="blob",registry="a"} 2
shoal_origin_errors_total{op="manifest",registry="b"} 3
shoal_peer_served_bytes_total 7
`)
	}))
	defer srv.Close()
	s := &Shoal{Name: "agent", URL: srv.URL}
	m, err := s.Metrics(context.Background(), `shoal_fetched_bytes_total{source="peer"}`, "shoal_fetched_bytes_total",
		"shoal_origin_errors_total", `shoal_origin_errors_total{registry="b"}`, "shoal_peer_served_bytes_total", "absent_total")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{`shoal_fetched_bytes_total{source="peer"}`: 28, "shoal_fetched_bytes_total": 128,
		"shoal_origin_errors_total": 5, `shoal_origin_errors_total{registry="b"}`: 3, "shoal_peer_served_bytes_total": 7, "absent_total": 0}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
}

func TestWaitCommitted(t *testing.T) {
	dir := t.TempDir()
	d := "sha256:" + "ab12"
	p := CommittedPath(dir, d)
	if p != filepath.Join(dir, "blobs", "sha256", "ab12") {
		t.Fatalf("CommittedPath = %s", p)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		_ = os.WriteFile(p, []byte("12345"), 0o644)
	}()
	if _, err := WaitCommitted(context.Background(), dir, d, 5, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := WaitCommitted(context.Background(), dir, d, 6, 20*time.Millisecond); err == nil {
		t.Fatal("a blob of the wrong size counted as committed")
	}
}
