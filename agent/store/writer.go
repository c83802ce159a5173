package store

import (
	"fmt"
	"hash"
	"os"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/diskio"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

// Writer writes one piece of content to a temporary file, hashing as it goes. Bytes written are
// readable through File().ReadAt while the write goes on, so a fetch can stream to its clients
// before the content is complete; they are not part of the store until Commit. Close always
// follows: it releases the file and removes it unless committed.
type Writer struct {
	s        *Store
	d        digest.Digest
	expected int64
	f        *os.File
	h        hash.Hash
	// maps builds the chunk map while hashing, for algorithms that have maps; nil otherwise.
	maps *chunks.Builder
	// adopted is the chunk map that chunks recorded with MarkChunk were verified against.
	// allVerified: every byte so far came through MarkChunk, so the hash has not seen them and
	// must resume from adopted's state before plain bytes follow.
	adopted     *chunks.Map
	allVerified bool
	// recorded is how many states of the adopted map the partial's record has.
	recorded int
	// have is set once chunks arrive out of order (WriteAt and MarkChunk): the chunks held
	// verified. n is then the verified prefix.
	have *chunks.Set
	// mapMu guards maps, h, adopted, have and n against PartialMap, Held and Holds, which peers
	// call while bytes land.
	mapMu sync.Mutex
	n     int64

	// partial: the file is d's partial file (ResumeWriter), kept with its map for a resume;
	// released gives the store's claim on that file back, once.
	partial  bool
	released sync.Once
	// reserved is what the writer counts in the store's pending bytes (under mu once writing
	// ends; Write adds to it for content of unknown size).
	reserved atomic.Int64

	mu        sync.Mutex
	verified  bool
	committed bool
	closed    bool
}

// NewWriter starts writing content d of the given size (-1 if unknown).
func (s *Store) NewWriter(d digest.Digest, size int64) (*Writer, error) {
	if _, err := s.path(d); err != nil {
		return nil, err
	}
	if err := s.makeRoom(size, 0); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.tmpDir(), d.Algorithm().String()+"-"+d.Encoded()[:12]+"-*")
	if err != nil {
		return nil, diskio.Error(err)
	}
	w := &Writer{s: s, d: d, expected: size, f: f}
	w.reserve(size)
	if b, err := chunks.NewBuilder(d.Algorithm(), s.chunkSize); err == nil {
		w.maps = b
		w.h = builderHash{b}
	} else {
		w.h = d.Algorithm().Hash()
	}
	return w, nil
}

// File returns the temporary file, for concurrent ReadAt of bytes already written.
func (w *Writer) File() *os.File { return w.f }

// Written returns the number of bytes written so far: for chunks written out of order, the
// contiguous prefix held.
func (w *Writer) Written() int64 {
	w.mapMu.Lock()
	defer w.mapMu.Unlock()
	return w.n
}

// Write appends p. Writing past the expected size fails with errdefs.ErrDigestMismatch: the
// source is sending more than the content it claims to be.
func (w *Writer) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := w.resumeHash(); err != nil {
		return 0, err
	}
	if w.expected >= 0 && w.n+int64(len(p)) > w.expected {
		return 0, fmt.Errorf("%s: more than the expected %d bytes: %w", w.d, w.expected, errdefs.ErrDigestMismatch)
	}
	n, err := w.s.ops.WriteAt(w.f, p, w.n)
	if w.expected < 0 {
		w.reserve(int64(n))
	}
	w.mapMu.Lock()
	w.h.Write(p[:n])
	w.n += int64(n)
	w.mapMu.Unlock()
	if err != nil {
		return n, diskio.Error(err)
	}
	return n, nil
}

// PartialMap returns the chunk map of the content written so far (complete once it all is),
// for peers fetching from this node while it still fetches; nil if the algorithm has no maps or
// the size is unknown. Its states are as trustworthy as the bytes: the whole-blob digest check
// at the receiving end catches a lie.
func (w *Writer) PartialMap() *chunks.Map {
	w.mapMu.Lock()
	defer w.mapMu.Unlock()
	switch {
	case w.expected < 0:
		return nil
	case w.allVerified:
		return w.adopted
	case w.maps != nil:
		return w.maps.PartialMap(w.d, w.expected)
	}
	return nil
}

// resumeHash makes the hash current after verified bytes, before plain ones.
func (w *Writer) resumeHash() error {
	if !w.allVerified {
		return nil
	}
	b, err := chunks.ResumeBuilder(w.adopted, w.n)
	if err != nil {
		return fmt.Errorf("%s: cannot hash on from %d: %w", w.d, w.n, err)
	}
	w.mapMu.Lock()
	// Chunks held past the prefix are written over in order from here: no longer served.
	w.maps, w.h, w.allVerified, w.have = b, builderHash{b}, false, nil
	w.mapMu.Unlock()
	return nil
}

// WriteAt lands bytes out of order: a chunk that is still being verified, or a range fetched in
// parallel. They are scratch until MarkChunk records the chunk as held, or Absorb hashes them in
// order: neither served nor part of Written. Bytes inside the written prefix or a held chunk are
// refused, so a failing transfer cannot damage what is held.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	if off < 0 || w.expected < 0 || end > w.expected {
		return 0, fmt.Errorf("%s: write at %d+%d outside %d bytes: %w", w.d, off, len(p), w.expected, errdefs.ErrInvalid)
	}
	w.mapMu.Lock()
	busy := off < w.n
	if w.have != nil && len(p) > 0 {
		for i := int(off / w.s.chunkSize); int64(i)*w.s.chunkSize < end; i++ {
			busy = busy || w.have.Has(i)
		}
	}
	w.mapMu.Unlock()
	if busy {
		return 0, fmt.Errorf("%s: write at %d over held bytes: %w", w.d, off, errdefs.ErrInvalid)
	}
	n, err := w.s.ops.WriteAt(w.f, p, off)
	if err != nil {
		return n, diskio.Error(err)
	}
	return n, nil
}

// Absorb takes the bytes landed with WriteAt up to upTo into the content, in order: they are
// read back from the file and hashed as if written with Write.
func (w *Writer) Absorb(upTo int64) error {
	if err := w.resumeHash(); err != nil {
		return err
	}
	if w.expected >= 0 && upTo > w.expected {
		return fmt.Errorf("%s: absorb to %d past %d bytes: %w", w.d, upTo, w.expected, errdefs.ErrInvalid)
	}
	buf := make([]byte, min(256<<10, max(upTo-w.Written(), 0)))
	for {
		n := w.Written()
		if n >= upTo {
			return nil
		}
		k, err := w.f.ReadAt(buf[:min(int64(len(buf)), upTo-n)], n)
		if k > 0 {
			w.mapMu.Lock()
			w.h.Write(buf[:k])
			w.n += int64(k)
			w.mapMu.Unlock()
		}
		if err != nil && k == 0 {
			return fmt.Errorf("store: reading back at %d: %w", n, err)
		}
	}
}

// MarkChunk records chunk i, landed with WriteAt, as held: the caller verified it against m, a
// map of this content in the store's chunk size that agrees with every map used before (the
// longer one is kept). Once every chunk is held, Verify accepts the content: the last chunk was
// verified to the digest and each one joins its neighbours' states.
func (w *Writer) MarkChunk(i int, m *chunks.Map) error {
	if m.Digest != w.d || m.ChunkSize != w.s.chunkSize || m.Size != w.expected {
		return fmt.Errorf("%s: chunk map for %s/%d/%d: %w", w.d, m.Digest, m.ChunkSize, m.Size, errdefs.ErrInvalid)
	}
	if i < 0 || i >= chunks.Count(m.Size, m.ChunkSize) {
		return fmt.Errorf("%s: chunk %d: %w", w.d, i, errdefs.ErrInvalid)
	}
	record, err := w.markChunk(i, m)
	if err == nil && record {
		// A longer map: record it, so that a restart can verify the chunks it covers. Outside
		// the lock: peers asking what this node holds do not wait for the fsync. A crash
		// before the record only costs a resume the chunks the shorter map cannot verify.
		if rerr := w.recordPartial(m); rerr != nil {
			w.s.log.Warn("recording a partial blob's map failed", "digest", w.d, "err", rerr)
		}
	}
	return err
}

// recordEvery is how much more of the blob a grown map must cover to be recorded again.
const recordEvery = chunks.DefaultSize

// markChunk is MarkChunk under the lock; it reports whether m is a longer map to record.
func (w *Writer) markChunk(i int, m *chunks.Map) (record bool, err error) {
	w.mapMu.Lock()
	defer w.mapMu.Unlock()
	switch {
	case w.n > 0 && !w.allVerified:
		return false, fmt.Errorf("%s: chunks after plain bytes: %w", w.d, errdefs.ErrInvalid)
	case w.adopted == nil || m.Extends(w.adopted):
		// A map that grew by a few pieces is recorded once it covers recordEvery more bytes (or
		// is complete): a write and fsync of the record for every piece of a blob whose map
		// grows piece by piece (one arriving in order at its provider) would cost more than the
		// pieces a crash can make a resume fetch again.
		grown := int64(m.Len()-w.recorded) * m.ChunkSize
		record = w.partial && (w.recorded == 0 || grown >= recordEvery || m.Complete() && m.Len() > w.recorded)
		if record {
			w.recorded = m.Len()
		}
		w.adopted = m
	case !w.adopted.Extends(m):
		return false, fmt.Errorf("%s: chunk map disagrees with the one adopted: %w", w.d, chunks.ErrMismatch)
	}
	w.allVerified = true
	if w.have == nil {
		w.have = chunks.NewSet(chunks.Count(m.Size, m.ChunkSize))
		for j := 0; int64(j+1)*m.ChunkSize <= w.n; j++ {
			w.have.Add(j)
		}
	}
	w.have.Add(i)
	for w.n < w.expected && w.have.Has(int(w.n/m.ChunkSize)) {
		_, n := m.Range(int(w.n / m.ChunkSize))
		w.n += n
	}
	return record, nil
}

// Held returns the chunks held, in the store's chunk size: those marked, or the whole chunks of
// an in-order prefix.
func (w *Writer) Held() *chunks.Set {
	w.mapMu.Lock()
	defer w.mapMu.Unlock()
	if w.have != nil {
		return w.have.Clone()
	}
	cs := w.s.chunkSize
	s := chunks.NewSet(chunks.Count(max(w.expected, w.n), cs))
	for j := 0; int64(j+1)*cs <= w.n || (w.n == w.expected && int64(j)*cs < w.n); j++ {
		s.Add(j)
	}
	return s
}

// Holds reports whether bytes [off, off+n) lie in chunks recorded with MarkChunk, each verified
// (bytes written in order are verified only as a whole, by Verify).
func (w *Writer) Holds(off, n int64) bool {
	w.mapMu.Lock()
	defer w.mapMu.Unlock()
	if w.have == nil || n <= 0 {
		return false
	}
	cs := w.s.chunkSize
	for i := int(off / cs); int64(i)*cs < off+n; i++ {
		if !w.have.Has(i) {
			return false
		}
	}
	return true
}

// Verify checks the size and digest of what was written. After a nil result the bytes are
// known good, though not yet durable; Commit makes them so.
func (w *Writer) Verify() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.verified {
		return nil
	}
	w.mapMu.Lock()
	defer w.mapMu.Unlock()
	if w.expected >= 0 && w.n != w.expected {
		return fmt.Errorf("%s: got %d bytes, expected %d: %w", w.d, w.n, w.expected, errdefs.ErrDigestMismatch)
	}
	if w.allVerified {
		// Every byte was verified against the adopted map, the last chunk to the digest.
		if w.n != w.adopted.Size {
			return fmt.Errorf("%s: got %d verified bytes of %d: %w", w.d, w.n, w.adopted.Size, errdefs.ErrDigestMismatch)
		}
		w.verified = true
		return nil
	}
	got := digest.Digest("")
	if w.maps != nil {
		got = w.maps.Digest()
	} else {
		got = digest.NewDigest(w.d.Algorithm(), w.h)
	}
	if got != w.d {
		return fmt.Errorf("%s: content hashes to %s: %w", w.d, got, errdefs.ErrDigestMismatch)
	}
	w.verified = true
	return nil
}

// Commit verifies the content, makes it durable and visible. A mediaType is recorded for
// manifests. Committing content that is already present succeeds.
func (w *Writer) Commit(mediaType string) error {
	if err := w.Verify(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed {
		return nil
	}
	if err := w.s.ops.Sync(w.f); err != nil {
		return diskio.Error(err)
	}
	// The chunk map was built while hashing in order, so it is as verified as the content; only
	// a map every chunk was verified against is recorded, and after a resume the builder's own
	// states (the verified prefix, then what it hashed) are the map.
	var m *chunks.Map
	switch {
	case w.adopted != nil && w.allVerified && w.adopted.ChunkSize == w.s.chunkSize:
		m = w.adopted
	case w.maps != nil && w.n > w.s.chunkSize:
		m = w.maps.Map()
	}
	if _, err := w.s.Place(w.f, w.d, w.n, mediaType, m); err != nil {
		return err
	}
	w.committed = true
	w.dropPartial()
	w.releasePartial()
	w.unreserve()
	return nil
}

// Close releases the file, removing it unless committed. It is safe to call more than once.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.f.Close()
	if !w.committed {
		_ = os.Remove(w.f.Name())
		w.dropPartial()
	}
	w.unreserve()
	w.releasePartial()
	return err
}

// reserve counts n more bytes of the writer's in the store's pending bytes.
func (w *Writer) reserve(n int64) {
	if n > 0 {
		w.reserved.Add(n)
		w.s.pending.Add(n)
	}
}

// unreserve takes the writer's bytes out of pending: it was committed (the content counts as
// committed now), closed, or suspended (its kept file counts as idle).
func (w *Writer) unreserve() { w.s.pending.Add(-w.reserved.Swap(0)) }

// builderHash lets the writer feed a chunks.Builder through the hash.Hash it writes to. Only
// Write is used.
type builderHash struct{ b *chunks.Builder }

func (h builderHash) Write(p []byte) (int, error) { return h.b.Write(p) }
func (h builderHash) Sum(b []byte) []byte         { panic("store: builderHash.Sum is not used") }
func (h builderHash) Reset()                      { panic("store: builderHash.Reset is not used") }
func (h builderHash) Size() int                   { return 0 }
func (h builderHash) BlockSize() int              { return 0 }
