package transfer

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// Super-seeding by copies. A node that is a blob's original holder (a seed, or a node streaming
// it from the origin) has the only uplink that carries chunks nobody else holds. Once it has sent
// a chunk, the receiver holds it and passes it on; sending it again spends that uplink on bytes
// the swarm already has, while chunks nobody has wait. So such a node sends a piece at most once
// per superSeedHold: a swarm request starting at a piece it sent more recently is answered busy
// about that chunk ("take it from the peers that hold it"), and the requester asks for another.
// A send that fails does not count. The hold ends the refusal even when the chunk's receivers
// cannot serve it (they left, or the requester does not know them), well before a requester's
// swarm gives up on a dead swarm (30 s without progress).
const (
	superSeedHold = 15 * time.Second
	// maxSeededBlobs bounds the blobs whose sends are remembered; the least recently asked is
	// forgotten first (its chunks may then be sent once more).
	maxSeededBlobs = 256
)

// WithSuperSeeding turns on super-seeding for the blobs original reports: the server sends each
// piece (of pieceSize, the cluster's) of such a blob of more than one chunk (of chunkSize) to one
// swarm requester at most once per superSeedHold.
func WithSuperSeeding(pieceSize, chunkSize int64, original func(d digest.Digest) bool) ServerOption {
	return func(s *Server) {
		if pieceSize > 0 && chunkSize > 0 && original != nil {
			s.seeding = &seeder{pieceSize: pieceSize, chunkSize: chunkSize, original: original, blobs: map[digest.Digest]*blobSends{}}
		}
	}
}

type seeder struct {
	pieceSize, chunkSize int64
	original             func(d digest.Digest) bool

	mu    sync.Mutex
	blobs map[digest.Digest]*blobSends
}

// blobSends are the recent sends of a blob's pieces.
type blobSends struct {
	last map[int64]send // by piece index: the last copy that did not fail
	used time.Time
}

// send is a copy of a piece: when it started, and to whom.
type send struct {
	at time.Time
	to peer.ID
}

// pieces are the pieces [a, b) that a request for off+n of a blob of size covers, or false when
// the request is not super-seeded: a blob of one chunk (a config, a small layer) is sent whole to
// whoever asks, since making its requesters wait for each other would cost more time than its
// bytes, and a request must start at a piece. Pieces, not chunks: a requester asks for the run of
// pieces it misses, which is a whole chunk only when it holds none of it (and a client waiting
// for its first byte asks for one piece alone).
func (s *seeder) pieces(off, n, size int64) (a, b int64, ok bool) {
	if size <= s.chunkSize || n <= 0 || off%s.pieceSize != 0 {
		return 0, 0, false
	}
	return off / s.pieceSize, (off + n + s.pieceSize - 1) / s.pieceSize, true
}

// admit records a copy of pieces [a, b) of d about to be sent to p, or reports false when piece
// a was sent within superSeedHold, with the peer it was sent to: the requester takes it from
// there. (A run whose first piece is new is sent whole even if a later piece of it went out
// recently: the requester holds none of the run, and splitting it would cost a round trip per
// piece.)
func (s *seeder) admit(d digest.Digest, a, b int64, p peer.ID, now time.Time) (bool, peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bs, ok := s.blobs[d]
	if !ok {
		s.forget()
		bs = &blobSends{last: map[int64]send{}}
		s.blobs[d] = bs
	}
	bs.used = now
	if last, ok := bs.last[a]; ok && now.Sub(last.at) < superSeedHold {
		return false, last.to
	}
	for k := a; k < b; k++ {
		bs.last[k] = send{at: now, to: p}
	}
	return true, ""
}

// failed records that the copy of pieces [a, b) admitted last was not received: it does not
// count.
func (s *seeder) failed(d digest.Digest, a, b int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bs := s.blobs[d]; bs != nil {
		for k := a; k < b; k++ {
			delete(bs.last, k)
		}
	}
}

// forget makes room for one more blob, dropping the least recently asked. Called with s.mu held.
func (s *seeder) forget() {
	if len(s.blobs) < maxSeededBlobs {
		return
	}
	var oldest digest.Digest
	var at time.Time
	for d, b := range s.blobs {
		if oldest == "" || b.used.Before(at) {
			oldest, at = d, b.used
		}
	}
	delete(s.blobs, oldest)
}
