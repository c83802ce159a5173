package p2p

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

// TestMain fails the package if goroutines outlive the tests: every node, lookup, bootstrap attempt
// and reprovider must end when its Node is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger logs to the test's output when SHOAL_P2P_LOG is set, and discards otherwise.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SHOAL_P2P_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newTestNode creates a node on 127.0.0.1 (a free port unless cfg says otherwise) with its own data
// directory unless cfg has one, and closes it when the test ends.
func newTestNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	if len(cfg.ListenAddrs) == 0 {
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	n.minProviderRestart = 0 // tests restart peers within seconds
	t.Cleanup(func() { n.Close() })
	return n
}

// run starts n.Run and returns a function that stops it and waits; the test's cleanup also does.
func run(t testing.TB, n *Node) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// cluster starts size running nodes; every node but the first bootstraps from the first.
func cluster(t testing.TB, size int, cfg Config) []*Node {
	t.Helper()
	first := newTestNode(t, cfg)
	run(t, first)
	nodes := []*Node{first}
	for range size - 1 {
		c := cfg
		c.Bootstrap = []string{first.Addrs()[0]}
		n := newTestNode(t, c)
		run(t, n)
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, "node joins and its reprovider is online", func() bool {
			return n.RoutingTableSize() > 0 && reproviderOnline(n)
		})
	}
	return nodes
}

// reproviderOnline reports whether n's reprovider runs and has measured the network.
func reproviderOnline(n *Node) bool {
	n.provMu.RLock()
	defer n.provMu.RUnlock()
	if n.prov == nil {
		return false
	}
	st, err := n.prov.sp.Stats(context.Background())
	return err == nil && st.Connectivity.Status == "online"
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tcpAddr(port int) string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port) }

// randomDigest returns the sha256 digest of random bytes, which nobody provides.
func randomDigest(t testing.TB) digest.Digest {
	t.Helper()
	b := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return digest.FromBytes(b)
}

// histogramCount returns how many observations h holds.
func histogramCount(t testing.TB, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// counterValue reads a counter.
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
