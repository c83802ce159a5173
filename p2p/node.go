package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/provider"
	"github.com/libp2p/go-libp2p-kad-dht/provider/keystore"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"go.uber.org/fx"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/p2p/admission"
	"github.com/shoal-oci/shoal/p2p/bootaddr"
	"github.com/shoal-oci/shoal/p2p/keys"
	"github.com/shoal-oci/shoal/p2p/limits"
	"github.com/shoal-oci/shoal/p2p/providerquota"
	"github.com/shoal-oci/shoal/p2p/seedauth"
	"github.com/shoal-oci/shoal/p2p/seedfind"
	"github.com/shoal-oci/shoal/p2p/tlsrecords"
)

// ProtocolPrefix is the DHT's protocol prefix: Shoal's DHT speaks /shoal/kad/1.0.0 and never mixes with
// the public IPFS DHT.
const ProtocolPrefix = "/shoal"

// ErrClosed is returned by operations on a closed Node. It wraps errdefs.ErrUnavailable.
var ErrClosed = fmt.Errorf("p2p node closed: %w", errdefs.ErrUnavailable)

// Node is a Shoal agent's libp2p node: a host and its DHT. Create it with New, run it with Run, and
// release it with Close. All methods are safe for concurrent use.
type Node struct {
	host      host.Host
	dht       *dht.IpfsDHT
	bootstrap []bootaddr.Entry
	psk       pnet.PSK
	probeTLS  *libp2ptls.Transport
	log       *slog.Logger
	metrics   *metrics

	// keys is the set of digests to advertise (multihashes), kept by Node so that it outlives provider
	// restarts; the provider reads it on every (re)provide.
	keys      keystore.Keystore
	keysStore datastore.Batching

	provMu sync.RWMutex
	prov   *reprovider // nil until the node has joined a cluster; guarded by provMu

	records *providerquota.Quota // the provider records stored for other peers
	lookups singleflight.Group
	seed    bool
	seeds   *seedfind.Finder
	cacheMu sync.Mutex
	cache   map[string]cachedProviders

	// Tunables, fixed by New; tests shorten some.
	lookupTimeout       time.Duration
	maxProviders        int
	firstGrace          time.Duration // how long a lookup collects providers after the first
	healthInterval      time.Duration
	minProviderRestart  time.Duration
	maxBootstrapBackoff time.Duration
	wrapRouter          func(provider.KadClosestPeersRouter) provider.KadClosestPeersRouter // tests count lookups

	running   atomic.Bool
	runMu     sync.Mutex     // orders Run's start against Close
	runWG     sync.WaitGroup // Run in progress; Close waits for it
	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// New builds a node from cfg: the identity from cfg.DataDir, a libp2p host (TLS over TCP with yamux,
// listening on cfg.ListenAddrs, inside the private network of cfg.SwarmKey if set, with Shoal's
// resource and connection limits), and a single Kademlia DHT in server mode under the /shoal prefix with
// no default bootstrap peers. The node listens when New returns but joins no cluster until Run.
func New(cfg Config) (*Node, error) {
	listen, boot, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	seedCID, err := DigestCID(SeedKey)
	if err != nil {
		return nil, err
	}
	key, err := keys.LoadIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	n := &Node{
		bootstrap:           boot,
		log:                 cfg.Logger,
		cache:               make(map[string]cachedProviders),
		lookupTimeout:       defaultLookupTimeout,
		maxProviders:        maxProviders,
		firstGrace:          firstGrace,
		healthInterval:      time.Second,
		minProviderRestart:  time.Minute,
		maxBootstrapBackoff: 10 * time.Second,
		closed:              make(chan struct{}),
		seed:                cfg.Seed,
	}
	if cfg.SwarmKey != nil {
		if n.psk, err = keys.ParseSwarmKey(cfg.SwarmKey); err != nil {
			return nil, err
		}
	}
	if n.probeTLS, err = libp2ptls.New(libp2ptls.ID, key, nil); err != nil {
		return nil, err
	}

	metricsOn := cfg.Registerer != nil
	rm, err := limits.ResourceManager(metricsOn)
	if err != nil {
		return nil, fmt.Errorf("p2p resource manager: %w", err)
	}
	cm, err := limits.ConnManager()
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		// Listen after construction: when libp2p.New's own listen fails (a busy port), it returns
		// without stopping what it started, leaking its goroutines.
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, tlsrecords.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.DisableRelay(),
		libp2p.UserAgent("shoal"),
	}
	if n.psk != nil {
		opts = append(opts, libp2p.PrivateNetwork(n.psk))
	}
	if len(cfg.AllowPeers) > 0 {
		opts = append(opts, libp2p.ConnectionGater(admission.Gater(cfg.AllowPeers)))
	}
	if metricsOn {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics(),
			// go-libp2p v0.49 builds its event bus with a metrics tracer even when metrics are disabled,
			// and that tracer registers on prometheus.DefaultRegisterer. Swap in a bus without one.
			libp2p.WithFxOption(fx.Decorate(func() event.Bus { return eventbus.NewBus() })))
	}
	n.host, err = libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("p2p host: %w", err)
	}
	// Listen succeeds if at least one address works, as libp2p's own listening does.
	if err := n.host.Network().Listen(listen...); err != nil {
		n.host.Close()
		return nil, fmt.Errorf("p2p listen on %v: %w", cfg.ListenAddrs, err)
	}

	n.records = providerquota.New(cfg.MaxProviderRecordsPerPeer, 0)
	n.dht, err = dht.New(n.host,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(ProtocolPrefix),
		dht.DisableValues(), // Shoal stores provider records only
		dht.BootstrapPeers(),
		dht.AddressFilter(preferNonLoopback),
		dht.OnRequestHook(n.records.Hook),
	)
	if err != nil {
		n.host.Close()
		return nil, fmt.Errorf("p2p dht: %w", err)
	}
	n.keysStore = dssync.MutexWrap(datastore.NewMapDatastore())
	if n.keys, err = keystore.NewKeystore(n.keysStore); err != nil {
		n.dht.Close()
		n.host.Close()
		return nil, fmt.Errorf("p2p keystore: %w", err)
	}
	if n.metrics, err = newMetrics(n, cfg.Registerer); err != nil {
		n.keys.Close()
		n.dht.Close()
		n.host.Close()
		return nil, err
	}
	auth, selfSeed := seedauth.Setup(n.host, n.seed, cfg.SeedAuthorities, cfg.SeedPeers, cfg.SeedAuthorityKey)
	if n.seed && !selfSeed {
		n.log.Warn("seed role without a seed authority key: other nodes treat this node as a plain peer unless they list it", "peer", n.ID())
	}
	n.seeds = seedfind.New(seedfind.Config{Host: n.host, Providers: n.dht, Key: seedCID, Auth: auth,
		Self: selfSeed, LookupTimeout: n.lookupTimeout})
	if err := n.seeds.Start(); err != nil {
		n.Close()
		return nil, err
	}
	if n.seed {
		// Announced with the node's content once it joins, and re-announced with it.
		if err := n.Provide(context.Background(), SeedKey); err != nil {
			n.Close()
			return nil, fmt.Errorf("p2p: advertising the seed role: %w", err)
		}
	}
	n.log.Info("p2p node listening", "peer", n.host.ID(), "addrs", n.Addrs(), "private_network", n.psk != nil, "seed", n.seed, "authorized_seed", selfSeed)
	return n, nil
}

// Close stops Run (waiting for it to return), the reprovider, the DHT and the host, closing every
// connection. Records this node published stay in the DHT until they expire. Close is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.runMu.Lock()
		close(n.closed)
		n.runMu.Unlock()
		n.runWG.Wait()  // Run sees closed, cancels its dials and returns
		n.seeds.Close() // before the host: background seed lookups may be dialling
		n.provMu.Lock()
		p := n.prov
		n.prov = nil
		n.provMu.Unlock()
		var errs []error
		if p != nil {
			errs = append(errs, p.close())
		}
		errs = append(errs, n.dht.Close(), n.host.Close(), n.keys.Close(), n.keysStore.Close())
		n.metrics.unregister()
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// ID is the node's peer ID, derived from its identity key.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Host is the libp2p host, for registering stream handlers and opening streams. Do not close it; Close
// the Node.
func (n *Node) Host() host.Host { return n.host }

// Addrs returns the node's addresses as full multiaddrs ending in /p2p/<id>, suitable for other nodes'
// Bootstrap lists. With a wildcard listen address it lists every interface address.
func (n *Node) Addrs() []string {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	if err != nil {
		return nil
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

// Peers lists the peers this node is connected to.
func (n *Node) Peers() []peer.ID { return n.host.Network().Peers() }

// RoutingTableSize is the number of peers in the DHT routing table; 0 means the node is cut off.
func (n *Node) RoutingTableSize() int { return n.dht.RoutingTable().Size() }

// Protect keeps the connection manager from trimming connections to p while any tag is set; use one tag
// per transfer (or per kind of transfer) and Unprotect it when the transfer ends.
func (n *Node) Protect(p peer.ID, tag string) { n.host.ConnManager().Protect(p, tag) }

// Unprotect removes a tag set by Protect.
func (n *Node) Unprotect(p peer.ID, tag string) { n.host.ConnManager().Unprotect(p, tag) }

// untilClosed derives from parent a context that also ends when the node closes, and after
// timeout when it is not zero.
func (n *Node) untilClosed(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	var ctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(parent, timeout)
	} else {
		ctx, cancel = context.WithCancel(parent)
	}
	go func() {
		select {
		case <-n.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (n *Node) isClosed() bool {
	select {
	case <-n.closed:
		return true
	default:
		return false
	}
}

// preferNonLoopback drops loopback addresses from a peer's address list unless they are all it has. It
// filters what the DHT advertises for this node (provider records) and what it stores for others: a
// loopback address only ever reaches the dialer itself, except in a single-machine cluster.
func preferNonLoopback(addrs []ma.Multiaddr) []ma.Multiaddr {
	out := make([]ma.Multiaddr, 0, len(addrs))
	for _, a := range addrs {
		if !manet.IsIPLoopback(a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return addrs
	}
	return out
}
