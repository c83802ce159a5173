// Package admission decides who may join a node's peer network: the allowlist of peer IDs (a
// connection gater) and the rule that a node reachable beyond loopback is never open. The swarm
// key itself is p2p/keys'; the node (package p2p) applies both.
package admission

import (
	"errors"
	"fmt"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ErrOpen is the refusal to run a peer listener that others can reach with neither a swarm key
// nor an allowlist: any host that reaches the port could join the cluster, read what the node
// holds and ask it to fetch from the origin with its credentials.
var ErrOpen = errors.New("a peer listener beyond loopback needs a swarm key or an allowlist of peer IDs")

// CheckOpen returns an error wrapping ErrOpen when any of listen is not a loopback address and
// the node has neither a swarm key nor an allowlist. A wildcard address (0.0.0.0, ::) listens on
// every interface and is not loopback; neither is a DNS name, whatever it resolves to. Loopback
// listeners (127.0.0.0/8, ::1) are reachable from this machine only and may stay open, for tests,
// demos and single-machine clusters.
func CheckOpen(listen []ma.Multiaddr, swarmKey bool, allowed int) error {
	if swarmKey || allowed > 0 {
		return nil
	}
	for _, a := range listen {
		if !manet.IsIPLoopback(a) {
			return fmt.Errorf("listening for peers on %s: %w", a, ErrOpen)
		}
	}
	return nil
}
