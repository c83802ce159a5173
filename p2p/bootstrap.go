package p2p

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	libp2pnet "github.com/libp2p/go-libp2p/p2p/net/pnet"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	mss "github.com/multiformats/go-multistream"
	"github.com/shoal-oci/shoal/p2p/bootaddr"
)

const (
	// dnsSample caps how many of a DNS name's addresses one attempt dials: a headless service of a
	// 1000-node DaemonSet has 1000 records, and joining needs only a few of them.
	dnsSample = 8
	// bootstrapParallel caps concurrent dials of one bootstrap attempt.
	bootstrapParallel = 16
	// dialTimeout bounds one bootstrap dial, including the ID probe.
	dialTimeout = 5 * time.Second
	// rtWait bounds how long an attempt waits for a connected peer to enter the routing table (identify
	// and the DHT's liveness check run asynchronously after Connect).
	rtWait = 3 * time.Second
	// refreshWait bounds how long an attempt waits for the routing table refresh that follows it.
	refreshWait = time.Second
)

// bootstrapTarget is one peer to dial in a bootstrap attempt: either known (info) or to be probed.
type bootstrapTarget struct {
	info          peer.AddrInfo
	network, addr string // set when the ID must be learned
	from          string // the entry it came from, for logs
}

// bootstrapOnce runs one bootstrap attempt: it connects to every bootstrap peer in parallel (learning IDs
// where needed), waits for the routing table to take one of them, and refreshes the routing table. It
// succeeds when the routing table is not empty afterwards.
func (n *Node) bootstrapOnce(ctx context.Context) error {
	targets, errs := n.bootstrapTargets(ctx)
	var (
		mu        sync.Mutex
		connected int
		wg        sync.WaitGroup
		sem       = make(chan struct{}, bootstrapParallel)
	)
	for _, t := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			id, err := n.connectTarget(ctx, t)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case id != "":
				connected++
			}
		}()
	}
	wg.Wait()
	if connected == 0 {
		if len(errs) == 0 {
			return errors.New("no bootstrap peer other than this node")
		}
		return errors.Join(errs...)
	}
	// Connect returns once identify is done; the DHT then checks the peer and adds it asynchronously.
	waitCtx, cancel := context.WithTimeout(ctx, rtWait)
	defer cancel()
	for n.dht.RoutingTable().Size() == 0 {
		select {
		case <-waitCtx.Done():
			return fmt.Errorf("connected to %d bootstrap peers but none entered the routing table (do they run the /shoal DHT?)", connected)
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Fill the routing table now rather than at the DHT's next periodic refresh. In a small cluster this
	// takes milliseconds; when hundreds of nodes join at once it can take seconds, and the node is already
	// usable (lookups walk from the bootstrap peers), so the refresh finishes in the background.
	refreshCtx, cancel := context.WithTimeout(ctx, refreshWait)
	defer cancel()
	select {
	case err := <-n.dht.RefreshRoutingTable():
		if err != nil {
			n.log.Debug("routing table refresh after bootstrap", "error", err)
		}
	case <-refreshCtx.Done():
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n.log.Debug("routing table refresh continues in the background", "routing_table", n.RoutingTableSize())
	}
	if n.dht.RoutingTable().Size() == 0 {
		return errors.New("routing table empty after bootstrap")
	}
	return nil
}

// bootstrapTargets expands the configured entries into dial targets, resolving DNS names now.
func (n *Node) bootstrapTargets(ctx context.Context) ([]bootstrapTarget, []error) {
	var (
		targets []bootstrapTarget
		errs    []error
	)
	for _, e := range n.bootstrap {
		switch {
		case e.DNSName != "":
			rctx, cancel := context.WithTimeout(ctx, dialTimeout)
			ips, err := net.DefaultResolver.LookupIPAddr(rctx, e.DNSName)
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", e, err))
				continue
			}
			rand.Shuffle(len(ips), func(i, j int) { ips[i], ips[j] = ips[j], ips[i] })
			for _, ip := range ips[:min(len(ips), dnsSample)] {
				targets = append(targets, bootstrapTarget{
					network: "tcp",
					addr:    net.JoinHostPort(ip.String(), strconv.Itoa(e.Port)),
					from:    e.String(),
				})
			}
		case e.Addr != nil:
			network, addr, err := bootaddr.TCPDialTarget(e.Addr)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			targets = append(targets, bootstrapTarget{network: network, addr: addr, from: e.String()})
		default:
			targets = append(targets, bootstrapTarget{info: e.Peer, from: e.String()})
		}
	}
	return targets, errs
}

// connectTarget connects to one target and returns its ID, or "" if the target is this node.
func (n *Node) connectTarget(ctx context.Context, t bootstrapTarget) (peer.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	info := t.info
	if info.ID == "" {
		id, remote, err := n.probePeerID(ctx, t.network, t.addr)
		if err != nil {
			return "", fmt.Errorf("%s: learn peer ID at %s: %w", t.from, t.addr, err)
		}
		a, err := manet.FromNetAddr(remote)
		if err != nil {
			return "", fmt.Errorf("%s: %w", t.from, err)
		}
		info = peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{a}}
	}
	if info.ID == n.host.ID() {
		return "", nil
	}
	if err := n.host.Connect(ctx, info); err != nil {
		return "", fmt.Errorf("%s: connect %s: %w", t.from, info.ID, err)
	}
	n.log.Debug("connected to bootstrap peer", "peer", info.ID, "entry", t.from)
	return info.ID, nil
}

// probePeerID learns the ID of the libp2p node listening at a TCP address by running the first steps of an
// outbound libp2p connection by hand: the private-network layer when a swarm key is set, multistream-select
// of TLS, and a TLS handshake that accepts any peer (go-libp2p's TLS transport allows an empty expected
// ID). The handshake authenticates the remote's key, so the ID is the remote's own. The connection is then
// closed; the caller connects through the host, which checks the ID again.
func (n *Node) probePeerID(ctx context.Context, network, addr string) (peer.ID, net.Addr, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close()
	// multistream and pnet do not watch ctx: closing the connection unblocks them.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	remote := conn.RemoteAddr()
	c := conn
	if n.psk != nil {
		if c, err = libp2pnet.NewProtectedConn(n.psk, conn); err != nil {
			return "", nil, err
		}
	}
	if err := mss.SelectProtoOrFail(libp2ptls.ID, c); err != nil {
		return "", nil, fmt.Errorf("negotiate TLS (wrong swarm key, or not a Shoal node?): %w", err)
	}
	sc, err := n.probeTLS.SecureOutbound(ctx, c, "")
	if err != nil {
		return "", nil, fmt.Errorf("TLS handshake: %w", err)
	}
	defer sc.Close()
	return sc.RemotePeer(), remote, nil
}
