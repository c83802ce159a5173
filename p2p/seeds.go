package p2p

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// SeedKey is the DHT key every seed provides, so that nodes find the cluster's seeds through the
// DHT with nothing listing them (p2p/seedfind). It names no content: no node holds a blob with
// this digest.
var SeedKey = digest.FromString("shoal/seed-role/1")

// IsSeed reports whether this node has the seed role.
func (n *Node) IsSeed() bool { return n.seed }

// Seeds returns the live authorized seeds of the cluster, this node included when it is one
// (seedfind.Finder.Seeds): it waits for a DHT lookup when the last one is too old.
func (n *Node) Seeds(ctx context.Context) []peer.ID { return n.seeds.Seeds(ctx) }

// KnownSeeds is Seeds without waiting (seedfind.Finder.Known). The fetch pipeline picks
// coordinators with it, so that a cluster without seeds pays no lookup per fetch.
func (n *Node) KnownSeeds() []peer.ID { return n.seeds.Known() }

// AuthorizedSeed reports whether p is a seed the operator authorized (see
// Config.SeedAuthorities): this node, when it is one, or a peer presenting a valid statement.
// Only such peers' metadata (tag resolutions, pins) is acted on.
func (n *Node) AuthorizedSeed(ctx context.Context, p peer.ID) bool {
	return n.seeds.Authorized(ctx, p)
}
