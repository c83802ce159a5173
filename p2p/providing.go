package p2p

import (
	"context"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p-kad-dht/provider"
	mh "github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"
)

// reprovideInterval is how often every advertised digest is announced again. Provider records live 48 h
// in the DHT; announcing every 12 h keeps four overlapping generations alive, so a digest stays findable
// even when the peers holding its newest records restart (their record stores are in memory).
const reprovideInterval = 12 * time.Hour

// reprovider wraps kad-dht's SweepingProvider. The sweeping provider groups the advertised keys by
// keyspace region (the keys that share a prefix of the DHT's key space, hence the same closest peers),
// and re-announces one region at a time, spread evenly over reprovideInterval: one DHT walk per region
// instead of one per key, and the records of a region sent over one stream per peer. A cluster of up to a
// few dozen nodes is a single region (its whole key set goes out as one batch every interval: about 2 s
// for 10,000 keys); larger clusters have more regions and a flatter rate. New keys are announced at
// once (StartProviding), not at the next sweep. docs/p2p.md has the measured costs.
//
// A reprovider is started only once the node has joined a cluster (the provider estimates the region
// size from the network and stays offline until it can), and restarted after the node was cut off; see
// Run. The key set (Node.keys) belongs to the Node and survives restarts.
type reprovider struct {
	sp *provider.SweepingProvider
	ds datastore.Batching
}

func (n *Node) newReprovider() (*reprovider, error) {
	ds := dssync.MutexWrap(datastore.NewMapDatastore())
	var router provider.KadClosestPeersRouter = n.dht
	if n.wrapRouter != nil {
		router = n.wrapRouter(router)
	}
	sp, err := provider.New(
		provider.WithHost(n.host),
		provider.WithRouter(router),
		provider.WithMessageSender(countingSender{MessageSender: n.dht.MessageSender(), provides: n.metrics.provides}),
		provider.WithSelfAddrs(n.dht.FilteredAddrs),
		provider.WithAddLocalRecord(func(ctx context.Context, h mh.Multihash) error {
			return n.dht.Provide(ctx, cid.NewCidV1(cid.Raw, h), false) // local record only
		}),
		provider.WithReplicationFactor(n.dht.BucketSize()),
		provider.WithReprovideInterval(reprovideInterval),
		provider.WithKeystore(n.keys),
		// In memory, and a fresh cycle on every start: the agent re-adds every digest it holds at start,
		// and a restarted provider announces everything once (the cluster may have changed meanwhile).
		provider.WithDatastore(ds),
		provider.WithResumeCycle(false),
	)
	if err != nil {
		ds.Close()
		return nil, err
	}
	return &reprovider{sp: sp, ds: ds}, nil
}

func (r *reprovider) close() error {
	err := r.sp.Close()
	r.ds.Close()
	return err
}

// Provide starts advertising d: the node announces itself as a provider of d now (asynchronously: the
// records normally reach the DHT within milliseconds; Provide does not wait for them) and again every
// reprovideInterval until StopProviding. Providing a digest that is already advertised costs nothing.
// A digest provided before the node has joined a cluster is announced when it joins. Errors: an
// unsupported or malformed digest (errdefs.ErrUnsupported, errdefs.ErrInvalid), ErrClosed, ctx's error.
func (n *Node) Provide(ctx context.Context, d digest.Digest) error {
	k, err := digestKey(d)
	if err != nil {
		return err
	}
	n.provMu.RLock()
	defer n.provMu.RUnlock()
	if n.isClosed() {
		return ErrClosed
	}
	added, err := n.keys.Put(ctx, k)
	if err != nil {
		return fmt.Errorf("provide %s: %w", d, err)
	}
	if len(added) == 0 || n.prov == nil {
		return nil
	}
	// force: the key is already in the shared keystore (we put it there), announce it anyway.
	if err := n.prov.sp.StartProviding(true, k); err != nil {
		return fmt.Errorf("provide %s: %w", d, err)
	}
	return nil
}

// StopProviding stops re-advertising d. Records already in the DHT expire on their own (within 48 h),
// so peers may still be sent here meanwhile and must get a clean "not found".
func (n *Node) StopProviding(d digest.Digest) {
	k, err := digestKey(d)
	if err != nil {
		return
	}
	n.provMu.RLock()
	defer n.provMu.RUnlock()
	if n.isClosed() {
		return
	}
	if n.prov != nil {
		err = n.prov.sp.StopProviding(k) // drops it from the provide queue and the key set
	} else {
		err = n.keys.Delete(context.Background(), k)
	}
	if err != nil {
		n.log.Warn("stop providing", "digest", d, "error", err)
	}
}

// providing reports whether d is in the reprovider's key set.
func (n *Node) providing(d digest.Digest) bool {
	k, err := digestKey(d)
	if err != nil {
		return false
	}
	n.provMu.RLock()
	defer n.provMu.RUnlock()
	if n.isClosed() {
		return false
	}
	keys, err := n.keys.Get(context.Background(), "")
	if err != nil {
		return false
	}
	for _, h := range keys {
		if string(h) == string(k) {
			return true
		}
	}
	return false
}

// providedCount is the size of the reprovider's key set.
func (n *Node) providedCount() int {
	n.provMu.RLock()
	defer n.provMu.RUnlock()
	if n.isClosed() {
		return 0
	}
	size, err := n.keys.Size(context.Background())
	if err != nil {
		return 0
	}
	return size
}

// restartProvider replaces the running reprovider (if any) with a fresh one. The fresh one announces
// every key once as soon as it is online, then sweeps on schedule. Holding provMu while swapping means no
// Provide is half-way through: a key put before the swap is seen by the new provider's first sweep, and
// one put after it goes to the new provider directly.
func (n *Node) restartProvider() error {
	n.provMu.Lock()
	if n.isClosed() {
		n.provMu.Unlock()
		return ErrClosed
	}
	p, err := n.newReprovider()
	if err != nil {
		n.provMu.Unlock()
		return err
	}
	old := n.prov
	n.prov = p
	n.provMu.Unlock()
	if old != nil {
		return old.close()
	}
	return nil
}

// stopProvider stops the reprovider; the key set stays.
func (n *Node) stopProvider() {
	n.provMu.Lock()
	p := n.prov
	n.prov = nil
	n.provMu.Unlock()
	if p != nil {
		if err := p.close(); err != nil {
			n.log.Debug("stop reprovider", "error", err)
		}
	}
}
