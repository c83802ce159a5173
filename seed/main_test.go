package seed_test

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"go.uber.org/goleak"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/seedauth"
	"github.com/shoal-oci/shoal/registryapi/origin"
	"github.com/shoal-oci/shoal/seed"
	"github.com/shoal-oci/shoal/test/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// fastOrigin keeps tests quick when the origin is down on purpose.
var fastOrigin = []origin.Option{
	origin.WithRetryBackoff(transport.Backoff{Duration: 10 * time.Millisecond, Factor: 1, Steps: 2}),
	origin.WithStallTimeout(5 * time.Second),
}

const loopback = "/ip4/127.0.0.1/tcp/0"

// node is a running agent or seed on 127.0.0.1.
type node struct {
	*agent.Agent
	seed *seed.Seed // nil for a plain agent
	host string
	stop func()
}

func testLogger(name string) *slog.Logger {
	if os.Getenv("SHOAL_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}

// authority is the tests' seed authority: startSeed signs every seed with it, and every node
// agentConfig configures trusts it.
var authority = func() ed25519.PrivateKey {
	k, err := seedauth.NewKey()
	if err != nil {
		panic(err)
	}
	return k
}()

func agentConfig(t *testing.T, registries []string, bootstrap []string) agent.Config {
	return agent.Config{
		DataDir:    t.TempDir(),
		Registries: registries,
		P2P: &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: bootstrap,
			SeedAuthorities: []ed25519.PublicKey{authority.Public().(ed25519.PublicKey)}},
		ChunkSize:     1 << 20,
		OriginOptions: fastOrigin,
	}
}

// serve runs fn on a fresh loopback listener until the test ends or stop is called.
func serve(t *testing.T, n *node, fn func(context.Context, net.Listener) error) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.host = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx, ln) }()
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node %s: %v", n.host, err)
			}
		})
	}
	t.Cleanup(n.stop)
	return n
}

// startSeed starts a seed, authorized by the tests' authority unless cfg names a key.
func startSeed(t *testing.T, cfg seed.Config) *node {
	t.Helper()
	cfg.Agent.Logger = testLogger("seed")
	if cfg.Agent.P2P != nil && cfg.Agent.P2P.SeedAuthorityKey == nil {
		pc := *cfg.Agent.P2P
		pc.SeedAuthorityKey = authority
		cfg.Agent.P2P = &pc
	}
	s, err := seed.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, &node{Agent: s.Agent(), seed: s}, s.Serve)
}

func startAgent(t *testing.T, cfg agent.Config) *node {
	t.Helper()
	cfg.Logger = testLogger("agent")
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, &node{Agent: a}, a.Serve)
}

func startOrigin(t *testing.T) *devregistry.Registry {
	t.Helper()
	o, err := devregistry.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pullImage pulls ref through a node's /v2 and returns each layer's bytes by digest.
func pullImage(t *testing.T, ref string) map[string][]byte {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	return testutil.LayerBytes(t, img)
}

// pullIndexDigest resolves ref through a node's /v2 and returns the digest it names.
func pullIndexDigest(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	desc, err := remote.Get(r, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("resolving %s: %v", ref, err)
	}
	return desc.Digest.String()
}

// counter sums a counter family of a node's metrics.
func counter(t *testing.T, n *node, name string) float64 {
	t.Helper()
	mfs, err := n.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
