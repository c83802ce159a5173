package p2p

import (
	"context"
	"fmt"
	"slices"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// Coordinator returns the digest's coordinator: among live nodes, the one whose peer ID is
// XOR-closest to the digest's DHT key. Every node of a converged cluster computes the same answer
// from the DHT's own closest-peers query, so a burst of requests for a blob nobody holds
// converges on one node, which fetches it from the origin once for all.
// self is true when this node is the coordinator (or knows no peer).
func (n *Node) Coordinator(ctx context.Context, d digest.Digest) (p peer.ID, self bool, err error) {
	c, err := DigestCID(d)
	if err != nil {
		return "", false, err
	}
	return n.CoordinatorFor(ctx, string(c.Hash()))
}

// CoordinatorFor is Coordinator for any DHT key (a tag's, say).
//
// When the cluster has seeds, the coordinator is the live seed XOR-closest to key instead: seeds
// are the nodes meant to face the origin (they pin what they fetch and keep serving it when the
// origin is down), and every node that sees the same seeds picks the same one.
func (n *Node) CoordinatorFor(ctx context.Context, key string) (p peer.ID, self bool, err error) {
	if seeds := n.KnownSeeds(); len(seeds) > 0 {
		best := ByDistance(key, seeds)[0]
		return best, best == n.ID(), nil
	}
	closest, err := n.ClosestPeers(ctx, key)
	if err != nil || len(closest) == 0 {
		if err != nil && ctx.Err() != nil {
			return "", false, fmt.Errorf("coordinator of %x: %w", key, err)
		}
		return n.ID(), true, nil
	}
	best := ByDistance(key, append(closest, n.ID()))[0]
	return best, best == n.ID(), nil
}

// ByDistance returns ps sorted by XOR distance to the DHT key key, closest first (the one rule
// for "the node closest to a key" that coordinators and seeds' replica leaders share). ps is
// not modified.
func ByDistance(key string, ps []peer.ID) []peer.ID {
	return kb.SortClosestPeers(slices.Clone(ps), kb.ConvertKey(key))
}
