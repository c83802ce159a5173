// Package chunks verifies pieces of a blob against a chunk map: the chain of SHA-2 states at
// fixed chunk boundaries. A blob's digest alone verifies only the whole blob; the map lets a node
// swarming a blob from several peers check each chunk as it arrives, blame the peer that sent a
// bad one, and hand clients a verified prefix before the last byte is in (see
// docs/architecture.md).
//
// SHA-256 and SHA-512 process fixed blocks, so their internal state after a whole number of
// blocks is well defined. The map of a blob holds that state (the "chain value") before each
// chunk. Chunk i verifies when hashing it from state i yields state i+1; the last chunk verifies
// when hashing it from the last state and finishing yields the blob's digest. Forging a chunk
// that joins two honest states needs a second preimage of the compression function; a forged map
// can only make forged chunks pass inside a forged run of states, and that run must rejoin the
// honest chain or end at the digest, so a forged map is caught at the latest at the last chunk.
package chunks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// DefaultSize is the default chunk size, 4 MiB: the unit a swarm schedules (one request).
const DefaultSize = 4 << 20

// DefaultPieceSize is the default piece size, 512 KiB: the unit a map has states for, so the unit
// a receiver verifies and passes on. A map's ChunkSize is the piece size of the cluster; a swarm
// asks for several pieces at once (a chunk) and lands each one as it verifies.
const DefaultPieceSize = 512 << 10

// MaxChunks bounds a map so that a peer cannot make us allocate without limit: with 512 KiB
// pieces it covers blobs of 128 GiB. A larger blob has no map: it is stored and served whole, and
// nodes fetch it from the origin rather than piece by piece from peers.
const MaxChunks = 1 << 18

// algo describes one supported hash's state layout (crypto/sha256 and crypto/sha512
// MarshalBinary: magic, chain value, one block of buffer, length).
type algo struct {
	magic     string
	chainLen  int
	blockSize int
	newHash   func() hash.Hash
}

var algos = map[digest.Algorithm]algo{
	digest.SHA256: {magic: "sha\x03", chainLen: 32, blockSize: 64, newHash: sha256.New},
	digest.SHA512: {magic: "sha\x07", chainLen: 64, blockSize: 128, newHash: sha512.New},
}

// ErrMismatch is wrapped by verification failures; it also wraps errdefs.ErrDigestMismatch.
var ErrMismatch = fmt.Errorf("chunk does not verify: %w", errdefs.ErrDigestMismatch)

// Map is the chunk map of one blob.
type Map struct {
	Digest    digest.Digest
	Size      int64
	ChunkSize int64
	// States[i] is the chain value before chunk i; States[0] is the hash's initial value.
	States [][]byte
}

// Count returns the number of chunks of a blob of size bytes. An empty blob has one, empty, chunk.
func Count(size, chunkSize int64) int {
	if size <= 0 {
		return 1
	}
	return int((size + chunkSize - 1) / chunkSize)
}

// Range returns the offset and length of chunk i.
func (m *Map) Range(i int) (off, n int64) {
	off = int64(i) * m.ChunkSize
	return off, min(m.ChunkSize, m.Size-off)
}

// Len is the number of chunks.
func (m *Map) Len() int { return len(m.States) }

// ValidChunkSize reports whether size works as a chunk size for the digest's algorithm: a
// positive multiple of the hash's block size.
func ValidChunkSize(alg digest.Algorithm, size int64) error {
	a, ok := algos[alg]
	if !ok {
		return fmt.Errorf("chunk maps support sha256 and sha512, not %s: %w", alg, errdefs.ErrUnsupported)
	}
	if size <= 0 || size%int64(a.blockSize) != 0 {
		return fmt.Errorf("chunk size %d is not a positive multiple of %d: %w", size, a.blockSize, errdefs.ErrInvalid)
	}
	return nil
}

// Validate checks a complete map's shape (not its truth, which only the chunks can show):
// algorithm, chunk size, number of states, state lengths, and that the first state is the
// initial value.
func (m *Map) Validate() error {
	if err := m.ValidatePartial(); err != nil {
		return err
	}
	if !m.Complete() {
		return fmt.Errorf("chunk map has %d states for %d chunks: %w", len(m.States), Count(m.Size, m.ChunkSize), errdefs.ErrInvalid)
	}
	return nil
}

// Complete reports whether the map has a state for every chunk.
func (m *Map) Complete() bool { return len(m.States) == Count(m.Size, m.ChunkSize) }

// ValidatePartial is Validate for the map of a blob still being fetched by its provider: the
// states of the chunk boundaries reached so far, at least the initial one.
func (m *Map) ValidatePartial() error {
	if err := m.Digest.Validate(); err != nil {
		return fmt.Errorf("chunk map digest: %w", errdefs.ErrInvalid)
	}
	if err := ValidChunkSize(m.Digest.Algorithm(), m.ChunkSize); err != nil {
		return err
	}
	a := algos[m.Digest.Algorithm()]
	if m.Size < 0 || Count(m.Size, m.ChunkSize) > MaxChunks {
		return fmt.Errorf("chunk map of %d bytes in chunks of %d: %w", m.Size, m.ChunkSize, errdefs.ErrInvalid)
	}
	if len(m.States) == 0 || len(m.States) > Count(m.Size, m.ChunkSize) {
		return fmt.Errorf("chunk map has %d states for %d chunks: %w", len(m.States), Count(m.Size, m.ChunkSize), errdefs.ErrInvalid)
	}
	for _, s := range m.States {
		if len(s) != a.chainLen {
			return fmt.Errorf("chunk map state of %d bytes: %w", len(s), errdefs.ErrInvalid)
		}
	}
	if !bytes.Equal(m.States[0], chainValue(a, a.newHash())) {
		return fmt.Errorf("chunk map does not start at the initial state: %w", ErrMismatch)
	}
	return nil
}

// ErrNotYet is returned by Verify for a chunk a partial map does not cover yet.
var ErrNotYet = errors.New("chunk map does not cover the chunk yet")

// Covers reports whether Verify can check chunk i: the map has the states before and after it
// (for the last chunk, the state before it: the digest is the end).
func (m *Map) Covers(i int) bool {
	if i == Count(m.Size, m.ChunkSize)-1 {
		return i < len(m.States)
	}
	return i+1 < len(m.States)
}

// Verify checks chunk i's bytes against the map. A nil result for every chunk proves the blob
// hashes to the map's digest.
func (m *Map) Verify(i int, data []byte) error {
	v, err := m.NewVerifier(i)
	if err != nil {
		return err
	}
	v.Write(data)
	return v.Check()
}

// Verifier checks one chunk as its bytes stream past, so a transfer can land them in place
// without holding the chunk in memory. Check says whether they verify.
type Verifier struct {
	m    *Map
	i    int
	want int64
	n    int64
	h    hash.Hash
}

// NewVerifier starts checking chunk i, which the map must cover.
func (m *Map) NewVerifier(i int) (*Verifier, error) {
	if i < 0 || i >= Count(m.Size, m.ChunkSize) {
		return nil, fmt.Errorf("chunk %d of %d: %w", i, Count(m.Size, m.ChunkSize), errdefs.ErrInvalid)
	}
	if !m.Covers(i) {
		return nil, fmt.Errorf("chunk %d of %s: %w", i, m.Digest, ErrNotYet)
	}
	a := algos[m.Digest.Algorithm()]
	h, err := resume(a, m.States[i], int64(i)*m.ChunkSize)
	if err != nil {
		return nil, err
	}
	_, n := m.Range(i)
	return &Verifier{m: m, i: i, want: n, h: h}, nil
}

// Begin starts checking chunk i when only the state before it is known: a chunk a provider is
// still receiving, whose end state a later map brings (Update). Check then fails with ErrNotYet
// until a map covering the chunk was given.
func (m *Map) Begin(i int) (*Verifier, error) {
	if i < 0 || i >= Count(m.Size, m.ChunkSize) || i >= len(m.States) {
		return nil, fmt.Errorf("chunk %d of %s: %w", i, m.Digest, ErrNotYet)
	}
	a := algos[m.Digest.Algorithm()]
	h, err := resume(a, m.States[i], int64(i)*m.ChunkSize)
	if err != nil {
		return nil, err
	}
	_, n := m.Range(i)
	return &Verifier{m: m, i: i, want: n, h: h}, nil
}

// Update takes a longer map of the same blob (one that extends the verifier's), so that a chunk
// begun before its end state was known can be checked.
func (v *Verifier) Update(m *Map) {
	if m != v.m && m.Len() > v.m.Len() && m.Extends(v.m) {
		v.m = m
	}
}

// Covered reports whether the verifier's map has the state Check needs.
func (v *Verifier) Covered() bool { return v.m.Covers(v.i) }

// Write hashes the next bytes of the chunk. It never fails.
func (v *Verifier) Write(p []byte) (int, error) {
	v.n += int64(len(p))
	if v.n <= v.want {
		v.h.Write(p)
	}
	return len(p), nil
}

// Check reports whether the bytes written are exactly chunk i.
func (v *Verifier) Check() error {
	m, i := v.m, v.i
	if v.n != v.want {
		return fmt.Errorf("chunk %d is %d bytes, want %d: %w", i, v.n, v.want, ErrMismatch)
	}
	if !m.Covers(i) {
		return fmt.Errorf("chunk %d of %s: %w", i, m.Digest, ErrNotYet)
	}
	a := algos[m.Digest.Algorithm()]
	if i == Count(m.Size, m.ChunkSize)-1 {
		if got := digest.NewDigest(m.Digest.Algorithm(), v.h); got != m.Digest {
			return fmt.Errorf("last chunk %d finishes to %s, not %s: %w", i, got, m.Digest, ErrMismatch)
		}
		return nil
	}
	if !bytes.Equal(chainValue(a, v.h), m.States[i+1]) {
		return fmt.Errorf("chunk %d of %s: %w", i, m.Digest, ErrMismatch)
	}
	return nil
}

// Equal reports whether two maps describe the same chain.
func (m *Map) Equal(o *Map) bool {
	if m.Digest != o.Digest || m.Size != o.Size || m.ChunkSize != o.ChunkSize || len(m.States) != len(o.States) {
		return false
	}
	for i := range m.States {
		if !bytes.Equal(m.States[i], o.States[i]) {
			return false
		}
	}
	return true
}

// chainValue extracts the chain value from a hash positioned on a block boundary.
func chainValue(a algo, h hash.Hash) []byte {
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(err) // crypto/sha256 and sha512 always marshal
	}
	return b[len(a.magic) : len(a.magic)+a.chainLen]
}

// resume builds a hash in the state given by chain value cv after length bytes.
func resume(a algo, cv []byte, length int64) (hash.Hash, error) {
	b := make([]byte, 0, len(a.magic)+a.chainLen+a.blockSize+8)
	b = append(b, a.magic...)
	b = append(b, cv...)
	b = append(b, make([]byte, a.blockSize)...)
	b = binary.BigEndian.AppendUint64(b, uint64(length))
	h := a.newHash()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("chunk map state: %v: %w", err, errdefs.ErrInvalid)
	}
	return h, nil
}

// Builder computes a blob's digest and chunk map in one pass over its bytes, in order.
type Builder struct {
	a         algo
	alg       digest.Algorithm
	chunkSize int64
	h         hash.Hash
	n         int64
	states    [][]byte
	// tooLarge: the bytes crossed MaxChunks boundaries, so there is no map; the hash goes on.
	tooLarge bool
}

// NewBuilder starts a map for content of the given digest algorithm.
func NewBuilder(alg digest.Algorithm, chunkSize int64) (*Builder, error) {
	if err := ValidChunkSize(alg, chunkSize); err != nil {
		return nil, err
	}
	a := algos[alg]
	h := a.newHash()
	return &Builder{a: a, alg: alg, chunkSize: chunkSize, h: h, states: [][]byte{chainValue(a, h)}}, nil
}

// Write hashes p, recording the state at every chunk boundary it crosses.
func (b *Builder) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		room := b.chunkSize - b.n%b.chunkSize
		if b.n > 0 && b.n%b.chunkSize == 0 && !b.tooLarge {
			// A boundary was reached by the previous write and more bytes follow: record it.
			if len(b.states) == MaxChunks {
				b.tooLarge, b.states = true, nil
			} else {
				b.states = append(b.states, chainValue(b.a, b.h))
			}
		}
		k := min(int64(len(p)), room)
		b.h.Write(p[:k])
		b.n += k
		p = p[k:]
	}
	return total, nil
}

// Size is the number of bytes written.
func (b *Builder) Size() int64 { return b.n }

// Read returns the chunk map of everything r yields, hashed with alg in chunks of chunkSize; its
// Digest is what the bytes hash to. ctx ends the read between buffers.
func Read(ctx context.Context, r io.Reader, alg digest.Algorithm, chunkSize int64) (*Map, error) {
	b, err := NewBuilder(alg, chunkSize)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := r.Read(buf)
		_, _ = b.Write(buf[:n])
		if err == io.EOF {
			if b.tooLarge {
				return nil, fmt.Errorf("blob exceeds %d chunks of %d bytes: %w", MaxChunks, chunkSize, errdefs.ErrTooLarge)
			}
			return b.Map(), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// Digest is the digest of the bytes written so far.
func (b *Builder) Digest() digest.Digest { return digest.NewDigest(b.alg, b.h) }

// PartialMap returns the states of the boundaries reached so far, as the partial map of a blob
// of the given digest and size that is still being written; nil if the blob is too large for a
// map.
func (b *Builder) PartialMap(d digest.Digest, size int64) *Map {
	if b.tooLarge || Count(size, b.chunkSize) > MaxChunks {
		return nil
	}
	states := append([][]byte(nil), b.states...)
	// A boundary just reached is recorded only when the next byte arrives: include it now.
	if b.n > 0 && b.n%b.chunkSize == 0 && int64(len(states)) == b.n/b.chunkSize && b.n < size {
		states = append(states, chainValue(b.a, b.h))
	}
	return &Map{Digest: d, Size: size, ChunkSize: b.chunkSize, States: states}
}

// Map returns the map of the bytes written, naming them with their digest; nil if they are too
// many for a map (more than MaxChunks chunks).
func (b *Builder) Map() *Map {
	if b.tooLarge {
		return nil
	}
	return &Map{Digest: b.Digest(), Size: b.n, ChunkSize: b.chunkSize, States: append([][]byte(nil), b.states...)}
}

// Binary encoding: "SHCM", version 1, algorithm name length + name, digest hex length + hex
// (implied by the algorithm), size, chunk size, count, states.
const magic = "SHCM\x01"

// MarshalBinary encodes the map for storage and for peers.
func (m *Map) MarshalBinary() ([]byte, error) {
	var b []byte
	b = append(b, magic...)
	b = binary.AppendUvarint(b, uint64(len(m.Digest)))
	b = append(b, m.Digest...)
	b = binary.AppendUvarint(b, uint64(m.Size))
	b = binary.AppendUvarint(b, uint64(m.ChunkSize))
	b = binary.AppendUvarint(b, uint64(len(m.States)))
	for _, s := range m.States {
		b = append(b, s...)
	}
	return b, nil
}

// Extends reports whether m has every state o has, and the same blob: a partial map grown.
func (m *Map) Extends(o *Map) bool {
	if m.Digest != o.Digest || m.Size != o.Size || m.ChunkSize != o.ChunkSize || len(m.States) < len(o.States) {
		return false
	}
	for i := range o.States {
		if !bytes.Equal(m.States[i], o.States[i]) {
			return false
		}
	}
	return true
}

// UnmarshalBinary decodes and validates a map, complete or partial. It never trusts the input's lengths beyond the
// bounds of the buffer and MaxChunks.
func (m *Map) UnmarshalBinary(b []byte) error {
	bad := func(what string) error { return fmt.Errorf("chunk map: %s: %w", what, errdefs.ErrInvalid) }
	if !bytes.HasPrefix(b, []byte(magic)) {
		return bad("not a chunk map")
	}
	b = b[len(magic):]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	dl, ok := next()
	if !ok || dl > 256 || uint64(len(b)) < dl {
		return bad("digest")
	}
	d := digest.Digest(b[:dl])
	b = b[dl:]
	size, ok1 := next()
	cs, ok2 := next()
	count, ok3 := next()
	if !ok1 || !ok2 || !ok3 || size > 1<<50 || cs > 1<<40 || count > MaxChunks {
		return bad("header")
	}
	a, known := algos[d.Algorithm()]
	if !known {
		return bad("algorithm")
	}
	if uint64(len(b)) != count*uint64(a.chainLen) {
		return bad("states")
	}
	states := make([][]byte, count)
	for i := range states {
		states[i] = bytes.Clone(b[:a.chainLen])
		b = b[a.chainLen:]
	}
	out := Map{Digest: d, Size: int64(size), ChunkSize: int64(cs), States: states}
	if err := out.ValidatePartial(); err != nil {
		return err
	}
	*m = out
	return nil
}

// ResumeBuilder continues building m's blob from byte off, a chunk boundary, in the state m gives
// for it: the bytes before off need not be hashed again. States before off are taken from m.
func ResumeBuilder(m *Map, off int64) (*Builder, error) {
	if off < 0 || off > m.Size || off%m.ChunkSize != 0 {
		return nil, fmt.Errorf("resume at %d: not a chunk boundary of %d-byte chunks: %w", off, m.ChunkSize, errdefs.ErrInvalid)
	}
	i := int(off / m.ChunkSize)
	if i >= len(m.States) {
		// off == Size at the end of a blob whose size is a chunk multiple: nothing left to hash,
		// but the builder must still finish to the digest, so resume at the last chunk instead.
		return nil, fmt.Errorf("resume at the end of %s: %w", m.Digest, errdefs.ErrInvalid)
	}
	a := algos[m.Digest.Algorithm()]
	h, err := resume(a, m.States[i], off)
	if err != nil {
		return nil, err
	}
	// The builder records a boundary's state when the first byte after it arrives, so state i
	// is recorded by the next Write (but the initial state is there from the start).
	keep := max(i, 1)
	states := make([][]byte, keep)
	copy(states, m.States[:keep])
	return &Builder{a: a, alg: m.Digest.Algorithm(), chunkSize: m.ChunkSize, h: h, n: off, states: states}, nil
}
