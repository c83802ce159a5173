package p2p

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/p2p/admission"
	"github.com/shoal-oci/shoal/p2p/bootaddr"
)

// DefaultListenAddr is where a node listens when Config.ListenAddrs is empty.
const DefaultListenAddr = "/ip4/0.0.0.0/tcp/4001"

// Config configures a Node. The zero value of every field except DataDir is usable.
type Config struct {
	// ListenAddrs are TCP multiaddrs to listen on; default []string{DefaultListenAddr}. TCP only: QUIC is
	// about 2.7 times slower here and refuses private networks.
	ListenAddrs []string
	// Bootstrap lists the peers to join through, in any of three forms (see bootaddr.Parse): a multiaddr
	// with /p2p/<id>, a multiaddr without it (the ID is learned with a handshake), or "dns:<name>:<port>"
	// (every A/AAAA record is a peer, as with a Kubernetes headless service; resolved on every attempt).
	// Empty means this node waits for others to join it.
	Bootstrap []string
	// SwarmKey is the content of a swarm.key file (see keys.ParseSwarmKey); nil means a public network. Nodes
	// with different keys, or with and without a key, cannot connect.
	SwarmKey []byte
	// DataDir holds the identity key (DataDir/identity.key), created on first start. Required.
	DataDir string
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives Shoal's p2p metrics (shoal_*) and libp2p's own (libp2p_*); nil disables
	// libp2p's metrics and leaves Shoal's unregistered. Nothing goes to prometheus.DefaultRegisterer
	// unless the caller passes it. One open Node per Registerer: Close unregisters the node's metrics.
	Registerer prometheus.Registerer
	// AllowPeers, when not empty, is the only set of peers this node talks to (a connection gater);
	// empty admits any peer that holds the swarm key. A node listening beyond loopback needs a
	// SwarmKey or AllowPeers (admission.CheckOpen).
	AllowPeers []peer.ID
	// MaxProviderRecordsPerPeer caps the live provider records this node stores in the DHT for
	// each other peer; more are refused (0: providerquota.DefaultPerPeer).
	MaxProviderRecordsPerPeer int
	// Seed gives this node the seed role: it advertises SeedKey, and every node that accepts it as
	// a seed (see SeedAuthorities) prefers seeds as coordinators (the nodes that fetch from the
	// origin for the cluster).
	Seed bool
	// SeedAuthorities are the seed authority public keys (seedauth.ParsePublicKey) this node
	// trusts: a peer is a seed only if it presents a statement one of them signed for its peer
	// ID, or is listed in SeedPeers. With neither, no peer is a seed (seeds still serve content,
	// as any peer).
	SeedAuthorities []ed25519.PublicKey
	// SeedPeers are peers this node accepts as seeds without a statement.
	SeedPeers []peer.ID
	// SeedAuthorityKey, on a seed, signs the statement that makes this node a seed (its public
	// key is then trusted too, as if in SeedAuthorities). A seed without it is a seed only to
	// nodes that list it in SeedPeers.
	SeedAuthorityKey ed25519.PrivateKey
}

// validate checks the config and fills defaults, returning the parsed forms New needs.
func (c *Config) validate() (listen []ma.Multiaddr, boot []bootaddr.Entry, err error) {
	if c.DataDir == "" {
		return nil, nil, fmt.Errorf("p2p config: DataDir is required: %w", errdefs.ErrInvalid)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = []string{DefaultListenAddr}
	}
	var errs []error
	for _, s := range c.ListenAddrs {
		a, err := ma.NewMultiaddr(s)
		if err == nil {
			err = bootaddr.CheckTCP(a)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("listen address %q: %v", s, err))
			continue
		}
		listen = append(listen, a)
	}
	for _, s := range c.Bootstrap {
		e, err := bootaddr.Parse(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		boot = append(boot, e)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("p2p config: %w: %w", err, errdefs.ErrInvalid)
	}
	if err := admission.CheckOpen(listen, c.SwarmKey != nil, len(c.AllowPeers)); err != nil {
		return nil, nil, fmt.Errorf("p2p config: %w: %w", err, errdefs.ErrInvalid)
	}
	return listen, boot, nil
}
