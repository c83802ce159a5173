package store

import (
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/chunks"
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
	// adopted is the chunk map that bytes written with WriteVerified were verified against.
	// allVerified: every byte so far came through WriteVerified, so the hash has not seen them
	// and must resume from adopted's state before plain bytes follow.
	adopted     *chunks.Map
	allVerified bool
	// mapMu guards maps, h and adopted against PartialMap, which peers call while bytes land.
	mapMu sync.Mutex
	n     int64

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
	f, err := os.CreateTemp(s.tmpDir(), d.Algorithm().String()+"-"+d.Encoded()[:12]+"-*")
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	w := &Writer{s: s, d: d, expected: size, f: f}
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

// Written returns the number of bytes written so far.
func (w *Writer) Written() int64 { return w.n }

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
	n, err := w.f.Write(p)
	w.mapMu.Lock()
	w.h.Write(p[:n])
	w.mapMu.Unlock()
	w.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("store: %w", err)
	}
	return n, nil
}

// WriteVerified appends bytes that the caller has already verified, chunk by chunk, against m,
// a chunk map of this content whose last chunk the caller verifies to the digest. They are not
// hashed again (verification is the costly part of a peer transfer), and m becomes the content's
// recorded map. Plain Writes may follow from a chunk boundary: hashing resumes there from m.
// Verified bytes may only start the content; after plain bytes they are hashed like any others.
func (w *Writer) WriteVerified(p []byte, m *chunks.Map) (int, error) {
	// A partial map may grow between writes: a map extending the adopted one replaces it.
	if m.Digest != w.d || (w.adopted != nil && w.adopted != m && !m.Extends(w.adopted)) || (w.n > 0 && !w.allVerified) {
		return w.Write(p)
	}
	if w.expected >= 0 && w.n+int64(len(p)) > w.expected {
		return 0, fmt.Errorf("%s: more than the expected %d bytes: %w", w.d, w.expected, errdefs.ErrDigestMismatch)
	}
	w.mapMu.Lock()
	w.adopted, w.allVerified = m, true
	w.mapMu.Unlock()
	n, err := w.f.Write(p)
	w.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("store: %w", err)
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
	w.maps, w.h, w.allVerified = b, builderHash{b}, false
	w.mapMu.Unlock()
	return nil
}

// Verify checks the size and digest of what was written. After a nil result the bytes are
// known good, though not yet durable; Commit makes them so.
func (w *Writer) Verify() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.verified {
		return nil
	}
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
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	final, _ := w.s.path(w.d)
	w.s.placeMu.Lock()
	defer w.s.placeMu.Unlock()
	// Metadata first: a crash after it and before the rename leaves a harmless record,
	// never a committed manifest without its media type. The chunk map was built while hashing
	// in order, so it is as verified as the content.
	var encodedMap []byte
	switch {
	case w.adopted != nil && w.allVerified && w.adopted.ChunkSize == w.s.chunkSize:
		// Only a map every chunk was verified against is recorded; after a resume the
		// builder's own states (the verified prefix, then what it hashed) are the map.
		encodedMap, _ = w.adopted.MarshalBinary()
	case w.maps != nil && w.n > w.s.chunkSize:
		encodedMap, _ = w.maps.Map().MarshalBinary()
	}
	if mediaType != "" || encodedMap != nil {
		if err := w.s.db.Update(func(tx *bolt.Tx) error {
			if mediaType != "" {
				if err := tx.Bucket(bucketMedia).Put([]byte(w.d), []byte(mediaType)); err != nil {
					return err
				}
			}
			if encodedMap != nil {
				bk, err := tx.CreateBucketIfNotExists(bucketMaps)
				if err != nil {
					return err
				}
				return bk.Put([]byte(w.d), encodedMap)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("store: recording metadata: %w", err)
		}
	}
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	_, statErr := os.Stat(final)
	existed := statErr == nil
	if !existed && !errors.Is(statErr, fs.ErrNotExist) {
		return fmt.Errorf("store: %w", statErr)
	}
	if err := os.Rename(w.f.Name(), final); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	w.committed = true
	if !existed {
		w.s.bytes.Add(w.n)
		w.s.count.Add(1)
	}
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
	}
	return err
}

// builderHash lets the writer feed a chunks.Builder through the hash.Hash it writes to. Only
// Write is used.
type builderHash struct{ b *chunks.Builder }

func (h builderHash) Write(p []byte) (int, error) { return h.b.Write(p) }
func (h builderHash) Sum(b []byte) []byte         { panic("store: builderHash.Sum is not used") }
func (h builderHash) Reset()                      { panic("store: builderHash.Reset is not used") }
func (h builderHash) Size() int                   { return 0 }
func (h builderHash) BlockSize() int              { return 0 }
