package p2p

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Seeds are found through the DHT, every node picks the same seed as a digest's coordinator,
// and a seed that stops is dropped at once.
func TestSeedsCoordinate(t *testing.T) {
	nodes := cluster(t, 4, Config{})
	var seeds []*Node
	for range 2 {
		s := newTestNode(t, Config{Seed: true, Bootstrap: []string{nodes[0].Addrs()[0]}})
		stop := run(t, s)
		t.Cleanup(stop)
		seeds = append(seeds, s)
	}
	want := []peer.ID{seeds[0].ID(), seeds[1].ID()}
	slices.Sort(want)
	ctx := context.Background()
	for _, n := range append(slices.Clone(nodes), seeds...) {
		waitFor(t, 10*time.Second, "node finds both seeds", func() bool {
			n.seeds.mu.Lock()
			n.seeds.expires = time.Time{}
			n.seeds.mu.Unlock()
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
