// Package bootaddr parses the addresses a node joins its cluster through (--bootstrap): a
// multiaddr naming its peer, a TCP multiaddr whose peer ID is learned on each attempt, or a DNS
// name whose every address is a peer (a Kubernetes headless service). The node dials them
// (package p2p); cmd/shoal checks them at configuration time with the same rules.
package bootaddr

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// dnsPrefix marks a bootstrap entry naming a DNS name whose every address is a peer.
const dnsPrefix = "dns:"

// Entry is one parsed bootstrap entry (p2p.Config.Bootstrap). Exactly one of its forms is set.
type Entry struct {
	// Peer is set for a multiaddr that names its peer (/ip4/10.0.0.1/tcp/4001/p2p/12D3...).
	Peer peer.AddrInfo
	// Addr is set for a TCP multiaddr without /p2p (/ip4/10.0.0.1/tcp/4001, /dns4/seed/tcp/4001): the peer's
	// ID is learned on every attempt with a TLS handshake, so a peer that changed identity is still found.
	Addr ma.Multiaddr
	// DNSName and Port are set for "dns:<name>:<port>": every A and AAAA record of the name is a peer
	// listening on Port (a Kubernetes headless service). The name is resolved on every attempt.
	DNSName string
	Port    int
}

// String returns the entry in the form Parse reads.
func (e Entry) String() string {
	switch {
	case e.DNSName != "":
		return dnsPrefix + net.JoinHostPort(e.DNSName, strconv.Itoa(e.Port))
	case e.Addr != nil:
		return e.Addr.String()
	default:
		addrs, err := peer.AddrInfoToP2pAddrs(&e.Peer)
		if err != nil || len(addrs) == 0 {
			return e.Peer.String()
		}
		return addrs[0].String()
	}
}

// Parse parses and validates one bootstrap entry (see Entry for the forms) so that a
// typo fails at configuration time instead of at the first attempt. Multiaddrs must be TCP over ip4, ip6,
// dns, dns4 or dns6. Errors wrap errdefs.ErrInvalid.
func Parse(s string) (Entry, error) {
	invalid := func(format string, args ...any) (Entry, error) {
		return Entry{}, fmt.Errorf("bootstrap entry %q: %s: %w", s, fmt.Sprintf(format, args...), errdefs.ErrInvalid)
	}
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, dnsPrefix); ok {
		host, portStr, err := net.SplitHostPort(rest)
		if err != nil {
			return invalid("want dns:<name>:<port>: %v", err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 1 || port > 65535 {
			return invalid("port %q is not a number from 1 to 65535", portStr)
		}
		if host == "" {
			return invalid("empty DNS name")
		}
		return Entry{DNSName: host, Port: port}, nil
	}
	if !strings.HasPrefix(s, "/") {
		return invalid("want a multiaddr (/ip4/.../tcp/PORT[/p2p/ID]) or dns:<name>:<port>")
	}
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return invalid("%v", err)
	}
	transport, id := ma.SplitLast(a)
	if id == nil || id.Protocol().Code != ma.P_P2P {
		if err := CheckTCP(a); err != nil {
			return invalid("%v", err)
		}
		return Entry{Addr: a}, nil
	}
	if len(transport) == 0 {
		return invalid("a peer ID needs an address before it")
	}
	if err := CheckTCP(transport); err != nil {
		return invalid("%v", err)
	}
	info, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		return invalid("%v", err)
	}
	return Entry{Peer: *info}, nil
}

// CheckTCP reports whether a is exactly <ip4|ip6|dns|dns4|dns6>/tcp/<port>.
func CheckTCP(a ma.Multiaddr) error {
	_, _, err := TCPDialTarget(a)
	return err
}

// TCPDialTarget returns the net.Dial network and address of a TCP multiaddr (see CheckTCP).
func TCPDialTarget(a ma.Multiaddr) (network, address string, err error) {
	if len(a) != 2 || a[1].Protocol().Code != ma.P_TCP {
		return "", "", fmt.Errorf("%s is not a TCP address (want /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>)", a)
	}
	switch a[0].Protocol().Code {
	case ma.P_IP4, ma.P_DNS4:
		network = "tcp4"
	case ma.P_IP6, ma.P_DNS6:
		network = "tcp6"
	case ma.P_DNS:
		network = "tcp"
	default:
		return "", "", fmt.Errorf("%s is not a TCP address (want /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>)", a)
	}
	return network, net.JoinHostPort(a[0].Value(), a[1].Value()), nil
}
