// Package benchpeerfetch takes the time to first byte of a peer fetch apart, outside the agent's
// goroutines, for the peer-transfer benchmark: the fetch's steps done one at a time with the
// agent's public APIs (TimeSteps), and a DHT client that times a provider lookup's first answer
// and its end (Probe).
package benchpeerfetch

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/p2p"
)

// Probe is a DHT client (not a server: it never enters the agents' routing tables) on its own
// libp2p host, speaking Shoal's DHT protocol. It times the two moments of one provider lookup
// that p2p.Node.FindProviders does not tell apart: the first provider arriving, and the lookup
// ending. Close it when done.
type Probe struct {
	h host.Host
	d *dht.IpfsDHT
}

// NewProbe starts a probe that joins the DHT through seeds.
func NewProbe(ctx context.Context, seeds []peer.AddrInfo) (*Probe, error) {
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New), libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableMetrics(), libp2p.DisableRelay())
	if err != nil {
		return nil, err
	}
	d, err := dht.New(h, dht.Mode(dht.ModeClient), dht.ProtocolPrefix(p2p.ProtocolPrefix),
		dht.DisableValues(), dht.BootstrapPeers())
	if err != nil {
		h.Close()
		return nil, err
	}
	p := &Probe{h: h, d: d}
	for _, s := range seeds {
		if err := h.Connect(ctx, s); err != nil {
			p.Close()
			return nil, fmt.Errorf("probe: connect %s: %w", s.ID, err)
		}
	}
	if err := <-d.RefreshRoutingTable(); err != nil {
		p.Close()
		return nil, fmt.Errorf("probe: refresh: %w", err)
	}
	return p, nil
}

// Close stops the probe's DHT client and host.
func (p *Probe) Close() {
	_ = p.d.Close()
	_ = p.h.Close()
}

// Lookup times one provider lookup for d, of at most 2 s: until one of holders arrives (0 if none
// does) and until the lookup ends.
func (p *Probe) Lookup(ctx context.Context, d digest.Digest, holders []peer.ID) (first, all time.Duration, err error) {
	c, err := p2p.DigestCID(d)
	if err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	for info := range p.d.FindProvidersAsync(ctx, c, 0) {
		if first == 0 && slices.Contains(holders, info.ID) {
			first = time.Since(start)
		}
	}
	return first, time.Since(start), ctx.Err()
}
