package p2p

import (
	"context"
	"fmt"

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
		best := seeds[0]
		for _, q := range seeds[1:] {
			if kb.Closer(q, best, key) {
				best = q
			}
		}
		return best, best == n.ID(), nil
	}
	closest, err := n.ClosestPeers(ctx, key)
	if err != nil || len(closest) == 0 {
		if err != nil && ctx.Err() != nil {
			return "", false, fmt.Errorf("coordinator of %x: %w", key, err)
		}
		return n.ID(), true, nil
	}
	best := closest[0]
	for _, q := range closest[1:] {
		if kb.Closer(q, best, key) {
			best = q
		}
	}
	if kb.Closer(n.ID(), best, key) {
		return n.ID(), true, nil
	}
	return best, false, nil
}
