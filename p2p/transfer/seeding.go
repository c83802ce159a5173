package transfer

import (
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Super-seeding by copies. A node that is a blob's original holder (a seed, or a coordinator
// streaming it from the origin) has the only uplink that carries chunks nobody else holds. Once
// it has sent a chunk, the receiver holds it and passes it on; sending it again spends that
// uplink on bytes the swarm already has. So such a node sends its chunks least-sent first: a swarm
// request for a chunk it sent more often than some other chunk of the blob it holds is answered
// busy ("take it from the peers that hold it"), for superSeedHold after the chunk's last send.
// The hold ends the refusal even when the chunk's receivers cannot serve it (they left, or the
// requester does not know them), well before a requester's swarm gives up (30 s without a chunk).
// With every chunk sent once, the next round starts: no chunk is refused for good.
const strictHold = true

const (
	superSeedHold = 15 * time.Second
	// maxSeededBlobs bounds the blobs whose sends are remembered; the least recently asked is
	// forgotten first (its chunks are then all "unsent" again, which costs at most a copy).
	maxSeededBlobs = 256
)

// WithSuperSeeding turns on super-seeding for the blobs original reports (see seeding.go): the
// server counts the copies it sends of each chunk (of chunkSize, the cluster's) and sends chunks
// least-sent first.
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

// blobSends are the copies of a blob's chunks sent.
type blobSends struct {
	sent map[int64]int       // by chunk index: copies started and not failed (no key: none)
	last map[int64]time.Time // by chunk index: when the last copy started
	used time.Time
}

// chunk is the chunk index of a request for off+n of a blob of size, or false when the request is
// not one whole chunk.
func (s *seeder) chunk(off, n, size int64) (int64, bool) {
	if off%s.chunkSize != 0 || n <= 0 || (n != s.chunkSize && off+n != size) {
		return 0, false
	}
	return off / s.chunkSize, true
}

// admit records a copy of chunk k of d about to be sent, or reports false when it should not be:
// k was sent within superSeedHold and more often than some of the held chunks of d (held is how
// many the node holds; those it never sent count as sent 0 times).
func (s *seeder) admit(d digest.Digest, k int64, held int, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	if !ok {
		s.forget()
		b = &blobSends{sent: map[int64]int{}, last: map[int64]time.Time{}}
		s.blobs[d] = b
	}
	b.used = now
	if c := b.sent[k]; c > 0 && now.Sub(b.last[k]) < superSeedHold && (c > b.least(held) || strictHold) {
		return false
	}
	b.sent[k]++
	b.last[k] = now
	return true
}

// done records how a copy of chunk k admitted earlier ended: one that failed was not received
// and does not count.
func (s *seeder) done(d digest.Digest, k int64, ok bool) {
	if ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobs[d]
	if b == nil {
		return
	}
	if b.sent[k]--; b.sent[k] <= 0 {
		delete(b.sent, k)
		delete(b.last, k)
	}
}

// least is the fewest copies sent of any of the held chunks.
func (b *blobSends) least(held int) int {
	if len(b.sent) < held {
		return 0
	}
	least := -1
	for _, c := range b.sent {
		if least < 0 || c < least {
			least = c
		}
	}
	return max(least, 0)
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
