// Package providerquota caps the provider records a node stores in the DHT for other peers: at
// most a number of live records per providing peer, and at most a number in all, so that one
// member cannot fill a node's memory with records, or crowd out the records of the others.
//
// kad-dht takes no custom provider store (its built-in manager is always used), so the quota
// sits in front of it, on the request path: Hook is a dht.OnRequestHook that sees every
// ADD_PROVIDER before the DHT's handler and empties the provider list of one over quota, which
// the handler then refuses ("no valid provider"). A record counts from the time it is added and
// until it would expire in the DHT (Validity after its last provide); a provide of a key the peer
// already holds a live record for refreshes that record and is always taken.
package providerquota

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p-kad-dht/amino"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Defaults. A node holding D digests sends each node at most D records (all of them in a
// cluster of up to 20 nodes, the DHT's replication factor; about 20/N of them in a larger one),
// so the per-peer cap is set above what a seed holding a whole registry's images announces. A
// record refused by every node costs the provider little: a node that finds no provider asks the
// digest's coordinator, which serves what it holds.
const (
	DefaultPerPeer = 1 << 16
	DefaultTotal   = 1 << 20
	// Validity is how long the DHT keeps a record after its last provide (kad-dht's default).
	Validity = amino.DefaultProvideValidity
)

// Quota counts the live provider records stored for each peer. Its methods are safe for
// concurrent use. The zero value is not usable; call New.
type Quota struct {
	perPeer, total int
	validity       time.Duration
	now            func() time.Time
	refused        atomic.Uint64

	mu        sync.Mutex
	peers     map[peer.ID]*records
	count     int       // records tracked, all peers
	nextSweep time.Time // a full sweep for expired records runs at most this often when at total
}

type records struct {
	expires  map[string]time.Time // DHT key → when the record expires
	earliest time.Time            // no record expires before (a lower bound)
}

// sweepEvery bounds how often a node at its total cap scans every peer's records for expired ones.
const sweepEvery = time.Minute

// New returns a quota of perPeer live records for each peer and total for all peers together
// (values below 1 take the defaults).
func New(perPeer, total int) *Quota {
	if perPeer < 1 {
		perPeer = DefaultPerPeer
	}
	if total < 1 {
		total = DefaultTotal
	}
	return &Quota{perPeer: perPeer, total: total, validity: Validity, now: time.Now, peers: map[peer.ID]*records{}}
}

// Hook is a dht.OnRequestHook: an ADD_PROVIDER over the sender's quota reaches the DHT's handler
// with no provider in it, and nothing is stored. Other messages pass untouched.
func (q *Quota) Hook(_ context.Context, s network.Stream, req *pb.Message) {
	if req.GetType() != pb.Message_ADD_PROVIDER {
		return
	}
	if !q.Admit(s.Conn().RemotePeer(), req.GetKey()) {
		req.ProviderPeers = nil
	}
}

// Admit reports whether a record of key provided by p may be stored, and counts it if so. The
// DHT stores only records whose provider is the sender, so p is the sender.
func (q *Quota) Admit(p peer.ID, key []byte) bool {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	r := q.peers[p]
	if r != nil {
		if _, ok := r.expires[string(key)]; ok {
			r.expires[string(key)] = now.Add(q.validity) // a re-provide: the record lives on
			return true
		}
		if len(r.expires) >= q.perPeer && !now.Before(r.earliest) {
			q.prune(r, now)
		}
		if len(r.expires) >= q.perPeer {
			q.refused.Add(1)
			return false
		}
	}
	if q.count >= q.total && !now.Before(q.nextSweep) {
		q.nextSweep = now.Add(sweepEvery)
		for id, other := range q.peers {
			q.prune(other, now)
			if len(other.expires) == 0 {
				delete(q.peers, id)
			}
		}
		r = q.peers[p]
	}
	if q.count >= q.total {
		q.refused.Add(1)
		return false
	}
	if r == nil {
		r = &records{expires: map[string]time.Time{}, earliest: now.Add(q.validity)}
		q.peers[p] = r
	}
	r.expires[string(key)] = now.Add(q.validity)
	q.count++
	return true
}

// prune forgets r's expired records and sets its earliest expiry.
func (q *Quota) prune(r *records, now time.Time) {
	earliest := now.Add(q.validity)
	for k, exp := range r.expires {
		if !exp.After(now) {
			delete(r.expires, k)
			q.count--
		} else if exp.Before(earliest) {
			earliest = exp
		}
	}
	r.earliest = earliest
}

// Held is how many live records of p are counted.
func (q *Quota) Held(p peer.ID) int {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	if r := q.peers[p]; r != nil {
		for _, exp := range r.expires {
			if exp.After(now) {
				n++
			}
		}
	}
	return n
}

// Refused is how many records were refused so far.
func (q *Quota) Refused() uint64 { return q.refused.Load() }
