package p2p

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-oci/shoal/p2p/seedauth"
)

// testAuthority returns a new seed authority key and a config fragment trusting it.
func testAuthority(t testing.TB) (ed25519.PrivateKey, []ed25519.PublicKey) {
	t.Helper()
	k, err := seedauth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k, []ed25519.PublicKey{k.Public().(ed25519.PublicKey)}
}

// refreshSeeds forgets n's last seed lookup, so that Seeds looks them up again.
func refreshSeeds(n *Node) {
	n.seeds.Expire()
}

// Seeds are found through the DHT, every node picks the same seed as a digest's coordinator,
// and a seed that stops is dropped at once.
func TestSeedsCoordinate(t *testing.T) {
	key, trusted := testAuthority(t)
	nodes := cluster(t, 4, Config{SeedAuthorities: trusted})
	var seeds []*Node
	for range 2 {
		s := newTestNode(t, Config{Seed: true, SeedAuthorityKey: key, Bootstrap: []string{nodes[0].Addrs()[0]}})
		stop := run(t, s)
		t.Cleanup(stop)
		seeds = append(seeds, s)
	}
	want := []peer.ID{seeds[0].ID(), seeds[1].ID()}
	slices.Sort(want)
	ctx := context.Background()
	for _, n := range append(slices.Clone(nodes), seeds...) {
		waitFor(t, 10*time.Second, "node finds both seeds", func() bool {
			refreshSeeds(n)
			got := n.Seeds(ctx)
			slices.Sort(got)
			return slices.Equal(got, want)
		})
	}
	if !seeds[0].IsSeed() || nodes[0].IsSeed() {
		t.Fatal("IsSeed does not report the role")
	}
	// Every node, seeds included, names the same seed coordinator for each of a few digests.
	for range 8 {
		d := randomDigest(t)
		var first peer.ID
		for i, n := range append(slices.Clone(nodes), seeds...) {
			c, self, err := n.Coordinator(ctx, d)
			if err != nil {
				t.Fatalf("Coordinator: %v", err)
			}
			if !slices.Contains(want, c) {
				t.Fatalf("node %d names %s, not a seed, as the coordinator", i, c)
			}
			if self != (c == n.ID()) {
				t.Fatalf("node %d: self = %v for coordinator %s", i, self, c)
			}
			if i == 0 {
				first = c
			} else if c != first {
				t.Fatalf("node %d names %s, node 0 names %s", i, c, first)
			}
		}
	}
	// Stop one seed: nodes drop it as soon as its connections close.
	if err := seeds[1].Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, "node drops the stopped seed", func() bool {
			return slices.Equal(n.Seeds(ctx), []peer.ID{seeds[0].ID()})
		})
	}
}

// serveStatement makes n answer the seed statement protocol with st, whatever it says: a lying
// peer replaying or forging statements.
func serveStatement(n *Node, st seedauth.Statement) {
	n.Host().SetStreamHandler(seedauth.ProtocolID, func(s network.Stream) {
		defer s.Close()
		_ = json.NewEncoder(s).Encode(st)
	})
}

// A flood of peers claiming the seed role (advertising SeedKey) does not hide the real seeds or
// take the coordinator role: sybils with no statement, with a statement replayed from a real
// seed, with one signed by an authority nobody trusts, and with a forged signature are all
// refused, however many there are; the real seeds are found and coordinate. A node that trusts
// no authority takes no seed at all, and one that lists a seed by ID takes that one.
func TestSeedSybilsDoNotHideSeeds(t *testing.T) {
	key, trusted := testAuthority(t)
	rogueKey, _ := testAuthority(t)
	nodes := cluster(t, 3, Config{SeedAuthorities: trusted})
	boot := []string{nodes[0].Addrs()[0]}
	var seeds []*Node
	for range 2 {
		s := newTestNode(t, Config{Seed: true, SeedAuthorityKey: key, Bootstrap: boot})
		run(t, s)
		seeds = append(seeds, s)
	}
	want := []peer.ID{seeds[0].ID(), seeds[1].ID()}
	slices.Sort(want)
	const sybils = 12
	var fakes []*Node
	for i := range sybils {
		f := newTestNode(t, Config{Seed: true, Bootstrap: boot})
		switch i % 4 {
		case 1: // a real seed's statement, replayed
			serveStatement(f, seedauth.Sign(key, seeds[0].ID(), time.Now().Add(time.Hour)))
		case 2: // its own peer ID, signed by an authority nobody trusts
			serveStatement(f, seedauth.Sign(rogueKey, f.ID(), time.Now().Add(time.Hour)))
		case 3: // its own peer ID under the trusted key's name, with a forged signature
			st := seedauth.Sign(rogueKey, f.ID(), time.Now().Add(time.Hour))
			st.Key = seedauth.FormatPublicKey(trusted[0])
			serveStatement(f, st)
		}
		run(t, f)
		fakes = append(fakes, f)
	}
	// Every fake's seed record is in the DHT before the nodes look.
	for _, f := range fakes {
		waitFor(t, 10*time.Second, "the sybil joins and advertises", func() bool {
			return f.RoutingTableSize() > 0 && reproviderOnline(f)
		})
	}
	ctx := context.Background()
	c, err := DigestCID(SeedKey)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "every seed record to be findable", func() bool {
		n := 0
		for range nodes[1].dht.FindProvidersAsync(ctx, c, 0) {
			n++
		}
		return n >= sybils+len(seeds)
	})
	for i, n := range nodes {
		refreshSeeds(n)
		got := n.Seeds(ctx)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("node %d: seeds %v, want the two real ones %v", i, got, want)
		}
		for range 8 {
			co, _, err := n.Coordinator(ctx, randomDigest(t))
			if err != nil || !slices.Contains(want, co) {
				t.Fatalf("node %d: coordinator %s (%v), not a real seed", i, co, err)
			}
		}
		for _, f := range fakes {
			if n.AuthorizedSeed(ctx, f.ID()) {
				t.Fatalf("node %d: sybil %s authorized", i, f.ID())
			}
		}
	}

	// Trusting no authority: no seed, the real ones included. Listing one: that one.
	plain := newTestNode(t, Config{Bootstrap: boot})
	run(t, plain)
	listing := newTestNode(t, Config{Bootstrap: boot, SeedPeers: []peer.ID{seeds[1].ID()}})
	run(t, listing)
	waitFor(t, 10*time.Second, "the new nodes join", func() bool {
		return plain.RoutingTableSize() > 0 && listing.RoutingTableSize() > 0
	})
	if got := plain.Seeds(ctx); len(got) != 0 {
		t.Fatalf("a node trusting no seed authority took %v as seeds", got)
	}
	if plain.AuthorizedSeed(ctx, seeds[0].ID()) {
		t.Fatal("a node trusting no seed authority accepted a seed")
	}
	waitFor(t, 10*time.Second, "the listed seed to be found", func() bool {
		refreshSeeds(listing)
		return slices.Equal(listing.Seeds(ctx), []peer.ID{seeds[1].ID()})
	})
}
