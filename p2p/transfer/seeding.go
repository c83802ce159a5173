package transfer

import (
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Super-seeding by copies. A node that is a blob's original holder (a seed, or a node streaming
// it from the origin) has the only uplink that carries chunks nobody else holds. Once it has sent
// a chunk, the receiver holds it and passes it on; sending it again spends that uplink on bytes
// the swarm already has, while chunks nobody has wait. So such a node sends a chunk at most once
// per superSeedHold: a swarm request for a chunk it sent more recently is answered busy about
// that chunk ("take it from the peers that hold it"), and the requester asks for another chunk.
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
// whole chunk (of chunkSize, the cluster's) of such a blob to one swarm requester at most once
// per superSeedHold.
func WithSuperSeeding(chunkSize int64, original func(d digest.Digest) bool) ServerOption {
	return func(s *Server) {
		if chunkSize > 0 && original != nil {
			s.seeding = &seeder{chunkSize: chunkSize, original: original, blobs: map[digest.Digest]*blobSends{}}
		}
	}
}

type seeder struct {
	chunkSize int64
	original  func(d digest.Digest) bool

	mu    sync.Mutex
	blobs map[digest.Digest]*blobSends
}

// blobSends are the recent sends of a blob's chunks.
type blobSends struct {
	last map[int64]time.Time // by chunk index: when the last copy that did not fail started
	used time.Time
}

// chunk is the chunk index of a request for off+n of a blob of size, or false when the request is
// not for one whole chunk of a blob of several: a blob of one chunk (a config, a small layer) is
// sent whole to whoever asks, since making its requesters wait for each other would cost more
// time than its bytes.
func (s *seeder) chunk(off, n, size int64) (int64, bool) {
	if size <= s.chunkSize || off%s.chunkSize != 0 || n <= 0 || (n != s.chunkSize && off+n != size) {
		return 0, false
	}
	return off / s.chunkSize, true
}

// admit records a copy of chunk k of d about to be sent, or reports false when k was sent
// within superSeedHold.
func (s *seeder) admit(d digest.Digest, k int64, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	if !ok {
		s.forget()
		b = &blobSends{last: map[int64]time.Time{}}
		s.blobs[d] = b
	}
	b.used = now
	if at, ok := b.last[k]; ok && now.Sub(at) < superSeedHold {
		return false
	}
	b.last[k] = now
	return true
}

// failed records that the copy of chunk k admitted last was not received: it does not count.
func (s *seeder) failed(d digest.Digest, k int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.blobs[d]; b != nil {
		delete(b.last, k)
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
