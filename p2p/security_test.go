package p2p

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/shoal-oci/shoal/p2p/keys"
)

// TestSwarmKeyIsolation: a keyed cluster admits a node with its key and nobody else. A node with another
// key, or with none, can neither bootstrap into it nor connect directly, and finds nothing in it.
func TestSwarmKeyIsolation(t *testing.T) {
	t.Parallel()
	key, err := keys.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := keys.NewSwarmKey()
	nodes := cluster(t, 2, Config{SwarmKey: key})
	d := randomDigest(t)
	if err := nodes[0].Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "member finds the digest", func() bool {
		infos, _ := nodes[1].FindProviders(context.Background(), d)
		return len(infos) == 1
	})
	seedAddr := nodes[0].Host().Addrs()[0]

	t.Run("right key, learned peer ID", func(t *testing.T) {
		t.Parallel()
		member := newTestNode(t, Config{SwarmKey: key, Bootstrap: []string{seedAddr.String()}})
		run(t, member)
		waitFor(t, 5*time.Second, "member finds the digest", func() bool {
			infos, _ := member.FindProviders(context.Background(), d)
			return len(infos) == 1 && infos[0].ID == nodes[0].ID()
		})
	})

	for _, tc := range []struct {
		name string
		key  []byte
	}{
		{name: "wrong key", key: otherKey},
		{name: "no key", key: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			outsider := newTestNode(t, Config{
				SwarmKey:  tc.key,
				Bootstrap: []string{seedAddr.String(), nodes[0].Addrs()[0]}, // learned ID and known ID
			})
			run(t, outsider)
			// The handshake hangs on garbage rather than failing fast, so bound the attempt.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if err := outsider.Host().Connect(ctx, peer.AddrInfo{ID: nodes[1].ID(), Addrs: nodes[1].Host().Addrs()}); err == nil {
				t.Error("outsider connected to a cluster member directly")
			}
			if n := len(outsider.Peers()); n != 0 || outsider.RoutingTableSize() != 0 {
				t.Errorf("outsider has %d peers and %d routing table entries", n, outsider.RoutingTableSize())
			}
			infos, err := outsider.FindProviders(context.Background(), d)
			if err != nil || len(infos) != 0 {
				t.Errorf("outsider's lookup = %v, %v; want nothing", infos, err)
			}
			for _, member := range nodes {
				if slices.Contains(member.Peers(), outsider.ID()) {
					t.Error("a member is connected to the outsider")
				}
			}
		})
	}
}

// TestAllowPeers: with an allowlist, a node talks only to listed peers, in both directions.
func TestAllowPeers(t *testing.T) {
	t.Parallel()
	friendDir, strangerDir := t.TempDir(), t.TempDir()
	friendID, err := keys.PeerIDFromDataDir(friendDir)
	if err != nil {
		t.Fatal(err)
	}
	guarded := newTestNode(t, Config{AllowPeers: []peer.ID{friendID}})
	run(t, guarded)
	friend := newTestNode(t, Config{DataDir: friendDir, Bootstrap: []string{guarded.Addrs()[0]}})
	run(t, friend)
	waitFor(t, 5*time.Second, "listed peer joins", func() bool { return friend.RoutingTableSize() > 0 })

	stranger := newTestNode(t, Config{DataDir: strangerDir})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := stranger.Host().Connect(ctx, peer.AddrInfo{ID: guarded.ID(), Addrs: guarded.Host().Addrs()}); err == nil {
		// The dialer may see the handshake succeed before the guarded side drops it; what matters
		// is that the connection does not survive.
		waitFor(t, 2*time.Second, "guarded node drops the stranger", func() bool {
			return !slices.Contains(guarded.Peers(), stranger.ID())
		})
	}
	if err := guarded.Host().Connect(ctx, peer.AddrInfo{ID: stranger.ID(), Addrs: stranger.Host().Addrs()}); err == nil {
		t.Error("guarded node dialed an unlisted peer")
	}
}
