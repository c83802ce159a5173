package admission

import (
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// allowGater admits only the peers of an allowlist. Inbound connections are checked once the TLS
// handshake has authenticated the remote (InterceptSecured); outbound dials are refused before dialing.
type allowGater struct {
	allowed map[peer.ID]struct{}
}

var _ connmgr.ConnectionGater = (*allowGater)(nil)

// Gater returns a connection gater that admits only the peers ids, in both directions.
func Gater(ids []peer.ID) connmgr.ConnectionGater {
	g := &allowGater{allowed: make(map[peer.ID]struct{}, len(ids))}
	for _, id := range ids {
		g.allowed[id] = struct{}{}
	}
	return g
}

func (g *allowGater) allows(p peer.ID) bool {
	_, ok := g.allowed[p]
	return ok
}

func (g *allowGater) InterceptPeerDial(p peer.ID) bool { return g.allows(p) }

func (g *allowGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allows(p) }

func (g *allowGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g *allowGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allows(p)
}

func (g *allowGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
