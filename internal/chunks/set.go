package chunks

import (
	"fmt"
	"math/bits"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// Set is a set of chunk indexes of one blob: the chunks a node holds verified. The zero value
// is unusable; make one with NewSet. A Set is not safe for concurrent use.
type Set struct {
	n     int
	words []uint64
	count int
}

// NewSet returns an empty set for a blob of n chunks.
func NewSet(n int) *Set { return &Set{n: n, words: make([]uint64, (n+63)/64)} }

// Len is the number of chunks of the blob.
func (s *Set) Len() int { return s.n }

// Count is the number of chunks in the set.
func (s *Set) Count() int { return s.count }

// Full reports whether every chunk is in the set.
func (s *Set) Full() bool { return s.count == s.n }

// Has reports whether chunk i is in the set.
func (s *Set) Has(i int) bool {
	return i >= 0 && i < s.n && s.words[i/64]&(1<<(i%64)) != 0
}

// Add puts chunk i in the set; indexes out of range are ignored.
func (s *Set) Add(i int) {
	if i < 0 || i >= s.n || s.Has(i) {
		return
	}
	s.words[i/64] |= 1 << (i % 64)
	s.count++
}

// AddAll puts every chunk of o, a set of the same blob, in the set.
func (s *Set) AddAll(o *Set) {
	if o == nil {
		return
	}
	for i := range min(s.n, o.n) {
		if o.Has(i) {
			s.Add(i)
		}
	}
}

// Remove takes chunk i out of the set.
func (s *Set) Remove(i int) {
	if !s.Has(i) {
		return
	}
	s.words[i/64] &^= 1 << (i % 64)
	s.count--
}

// Clone returns an independent copy.
func (s *Set) Clone() *Set {
	return &Set{n: s.n, words: append([]uint64(nil), s.words...), count: s.count}
}

// MarshalBinary encodes the set as a little-endian bitmap of ceil(n/8) bytes.
func (s *Set) MarshalBinary() ([]byte, error) {
	b := make([]byte, (s.n+7)/8)
	for i := range b {
		b[i] = byte(s.words[i/8] >> (8 * (i % 8)))
	}
	return b, nil
}

// SetFromBinary decodes a bitmap of a blob of n chunks, as a peer sent it: it must be exactly
// ceil(n/8) bytes with no bit set past chunk n-1.
func SetFromBinary(b []byte, n int) (*Set, error) {
	if n < 0 || n > MaxChunks || len(b) != (n+7)/8 {
		return nil, fmt.Errorf("chunk set of %d bytes for %d chunks: %w", len(b), n, errdefs.ErrInvalid)
	}
	s := NewSet(n)
	for i, v := range b {
		s.words[i/8] |= uint64(v) << (8 * (i % 8))
	}
	if r := n % 64; r != 0 && len(s.words) > 0 && s.words[len(s.words)-1]>>r != 0 {
		return nil, fmt.Errorf("chunk set names chunks past %d: %w", n, errdefs.ErrInvalid)
	}
	for _, w := range s.words {
		s.count += bits.OnesCount64(w)
	}
	return s, nil
}
