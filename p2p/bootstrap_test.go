package p2p

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/p2p/bootaddr"
	"github.com/shoal-oci/shoal/p2p/keys"
)

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{name: "no data dir", cfg: Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}},
		{name: "quic listen", cfg: Config{DataDir: t.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}}},
		{name: "bad bootstrap", cfg: Config{DataDir: t.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: []string{"seed:4001"}}},
		{name: "bad swarm key", cfg: Config{DataDir: t.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, SwarmKey: []byte("secret")}},
		// Beyond loopback, a node needs a swarm key or an allowlist (admission.CheckOpen).
		{name: "open by default", cfg: Config{DataDir: t.TempDir()}},
		{name: "open on a wildcard", cfg: Config{DataDir: t.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0", "/ip6/::/tcp/0"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, err := New(tc.cfg)
			if err == nil {
				n.Close()
				t.Fatal("New accepted a bad config")
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("New error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

// TestBootstrapForms joins a node through each form of bootstrap entry.
func TestBootstrapForms(t *testing.T) {
	t.Parallel()
	seed := newTestNode(t, Config{})
	run(t, seed)
	port := seed.Host().Addrs()[0] // /ip4/127.0.0.1/tcp/N
	portNum, err := port.ValueForProtocol(6)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		entry string
	}{
		{name: "full multiaddr", entry: seed.Addrs()[0]},
		{name: "multiaddr without peer ID", entry: port.String()},
		{name: "dns name", entry: "dns:localhost:" + portNum},
		{name: "dns multiaddr without peer ID", entry: "/dns4/localhost/tcp/" + portNum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := newTestNode(t, Config{Bootstrap: []string{tc.entry}})
			start := time.Now()
			run(t, n)
			waitFor(t, 5*time.Second, "joined through "+tc.entry, func() bool {
				return n.RoutingTableSize() > 0 && slices.Contains(n.Peers(), seed.ID())
			})
			t.Logf("joined through %s in %v", tc.entry, time.Since(start))
		})
	}
}

// TestBootstrapSkipsSelf: a node listed in its own bootstrap list (as with a headless service that
// includes every pod) joins through the others and does not dial itself.
func TestBootstrapSkipsSelf(t *testing.T) {
	t.Parallel()
	seed := newTestNode(t, Config{})
	run(t, seed)
	port := freePort(t)
	n := newTestNode(t, Config{
		ListenAddrs: []string{tcpAddr(port)},
		Bootstrap:   []string{tcpAddr(port), seed.Addrs()[0]},
	})
	if err := n.bootstrapOnce(context.Background()); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	alone := newTestNode(t, Config{ListenAddrs: []string{tcpAddr(freePort(t))}})
	alone.bootstrap = []bootaddr.Entry{{Addr: alone.Host().Addrs()[0]}}
	if err := alone.bootstrapOnce(context.Background()); err == nil || !strings.Contains(err.Error(), "other than this node") {
		t.Fatalf("bootstrap through only itself: %v", err)
	}
}

// TestBootstrapRetriesUntilPeerIsUp starts a node before its bootstrap peer.
func TestBootstrapRetriesUntilPeerIsUp(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	seedDir := t.TempDir()
	seedID, err := keys.PeerIDFromDataDir(seedDir)
	if err != nil {
		t.Fatal(err)
	}
	// One node knows the seed's ID, the other learns it; both start before the seed.
	early := []*Node{
		newTestNode(t, Config{Bootstrap: []string{fmt.Sprintf("%s/p2p/%s", tcpAddr(port), seedID)}}),
		newTestNode(t, Config{Bootstrap: []string{tcpAddr(port)}}),
	}
	for _, n := range early {
		run(t, n)
	}
	time.Sleep(1500 * time.Millisecond) // several failed attempts (and libp2p dial backoffs) pile up
	for _, n := range early {
		if n.RoutingTableSize() != 0 {
			t.Fatal("joined a cluster that does not exist yet")
		}
	}
	seed := newTestNode(t, Config{DataDir: seedDir, ListenAddrs: []string{tcpAddr(port)}})
	run(t, seed)
	start := time.Now()
	for _, n := range early {
		waitFor(t, 6*time.Second, "early node joins once its bootstrap peer is up", func() bool {
			return n.RoutingTableSize() > 0 && slices.Contains(n.Peers(), seed.ID())
		})
	}
	t.Logf("joined %v after the seed came up", time.Since(start))
}

// TestRebootstrapAfterPeerRestart: a node whose only peer restarts is cut off, bootstraps again, and
// re-announces what it provides, so the restarted peer (whose records were in memory) finds it. The peer
// comes back at the same address with its identity, or rebuilt with a new one (the bootstrap entry has
// no peer ID, so the new one is learned).
func TestRebootstrapAfterPeerRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		newIdentity bool
	}{
		{name: "same identity"},
		{name: "new identity", newIdentity: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			port := freePort(t)
			seedDir := t.TempDir()
			seed := newTestNode(t, Config{DataDir: seedDir, ListenAddrs: []string{tcpAddr(port)}})
			stopSeed := run(t, seed)
			n := newTestNode(t, Config{Bootstrap: []string{tcpAddr(port)}})
			run(t, n)
			waitFor(t, 5*time.Second, "node joins", func() bool { return n.RoutingTableSize() > 0 })
			d := randomDigest(t)
			if err := n.Provide(context.Background(), d); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 2*time.Second, "seed finds the digest", func() bool {
				infos, _ := seed.FindProviders(context.Background(), d)
				return len(infos) == 1
			})

			stopSeed()
			seed.Close()
			waitFor(t, 5*time.Second, "node notices it is cut off", func() bool { return n.isolated() })

			if tc.newIdentity {
				seedDir = t.TempDir()
			}
			restarted := newTestNode(t, Config{DataDir: seedDir, ListenAddrs: []string{tcpAddr(port)}})
			run(t, restarted)
			if (restarted.ID() == seed.ID()) == tc.newIdentity {
				t.Fatalf("restarted peer's identity: %s, before %s", restarted.ID(), seed.ID())
			}
			start := time.Now()
			waitFor(t, 10*time.Second, "node rejoins the restarted peer", func() bool {
				return slices.Contains(n.Peers(), restarted.ID()) && restarted.RoutingTableSize() > 0
			})
			t.Logf("rejoined %v after the peer restarted", time.Since(start))
			waitFor(t, 5*time.Second, "restarted peer finds the digest again", func() bool {
				infos, _ := restarted.FindProviders(context.Background(), d)
				return len(infos) == 1 && infos[0].ID == n.ID()
			})
			t.Logf("re-announced %v after the peer restarted", time.Since(start))
		})
	}
}
