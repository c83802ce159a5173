package main

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

// probe is a DHT client (not a server: it never enters the agents' routing tables) on its own
// libp2p host in the scenario-2 process, speaking Shoal's DHT protocol. It times the two moments
// of one provider lookup that p2p.Node.FindProviders does not tell apart: the first provider
// arriving, and the lookup ending.
type probe struct {
	h host.Host
	d *dht.IpfsDHT
}

func newProbe(ctx context.Context, seeds []peer.AddrInfo) (*probe, error) {
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
	p := &probe{h: h, d: d}
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

func (p *probe) Close() {
	_ = p.d.Close()
	_ = p.h.Close()
}

// lookup times one provider lookup for d: until one of holders arrives (0 if none does) and
// until the lookup ends.
func (p *probe) lookup(ctx context.Context, d digest.Digest, holders []peer.ID) (first, all time.Duration, err error) {
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
