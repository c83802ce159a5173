package store

import (
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/diskio"
)

// Partial content: a blob being fetched with a known size is written
// to partial/<algorithm>-<hex>, and the chunk map its chunks are verified against is recorded in
// the partial bucket as it grows, and when the fetch is suspended (the agent shutting down). After
// a restart, or a crash, ResumeWriter reopens the file and holds again every chunk that still
// verifies against the recorded map: bytes the crash lost or damaged simply fail and are fetched
// again. The recorded map is as trustworthy as it was in the run that recorded it: a peer's map
// that chunks verified against, or the chain of an origin stream not yet checked against the
// digest. Chunks held by it are served to peers as they were before the restart; the commit still
// requires the whole chain to end at the digest.
var bucketPartial = []byte("partial")

// partialMaxAge is how long an abandoned partial is kept for a resume.
const partialMaxAge = 7 * 24 * time.Hour

func (s *Store) partialDir() string { return filepath.Join(s.root, "partial") }

func (s *Store) partialPath(d digest.Digest) string {
	return filepath.Join(s.partialDir(), d.Algorithm().String()+"-"+d.Encoded())
}

// cleanPartials drops partial files without a record or older than partialMaxAge, and records
// without a file; the others count as idle.
func (s *Store) cleanPartials() error {
	keep := map[string]bool{}
	s.idle = map[digest.Digest]int64{}
	var stale [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPartial).ForEach(func(k, _ []byte) error {
			d := digest.Digest(k)
			if d.Validate() != nil {
				stale = append(stale, append([]byte(nil), k...))
				return nil
			}
			name := filepath.Base(s.partialPath(d))
			info, err := os.Stat(filepath.Join(s.partialDir(), name))
			if err != nil || time.Since(info.ModTime()) > partialMaxAge {
				stale = append(stale, append([]byte(nil), k...))
				return nil
			}
			keep[name] = true
			s.idle[d] = info.Size()
			s.pending.Add(info.Size())
			return nil
		})
	})
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(s.partialDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !keep[e.Name()] {
			_ = os.RemoveAll(filepath.Join(s.partialDir(), e.Name()))
		}
	}
	if len(stale) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, k := range stale {
			if err := tx.Bucket(bucketPartial).Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// partialMap returns the map recorded for d's partial, or nil.
func (s *Store) partialMap(d digest.Digest) *chunks.Map {
	var m *chunks.Map
	_ = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPartial).Get([]byte(d))
		if b == nil {
			return nil
		}
		var pm chunks.Map
		if pm.UnmarshalBinary(b) == nil && pm.Digest == d && pm.ChunkSize == s.chunkSize {
			m = &pm
		}
		return nil
	})
	return m
}

// Partial reports whether a resumable partial of d is held, and the blob's size.
func (s *Store) Partial(d digest.Digest) (int64, bool) {
	if d.Validate() != nil {
		return 0, false
	}
	m := s.partialMap(d)
	if m == nil {
		return 0, false
	}
	if _, err := os.Stat(s.partialPath(d)); err != nil {
		return 0, false
	}
	return m.Size, true
}

// ResumeWriter is NewWriter for content of a known size that survives a restart: it continues
// d's partial file if one is recorded for that size, holding every chunk that verifies against
// the recorded map, and otherwise starts one. Only one writer of a digest may be open at a time
// (the agent fetches each digest once).
func (s *Store) ResumeWriter(d digest.Digest, size int64) (*Writer, error) {
	if _, err := s.path(d); err != nil {
		return nil, err
	}
	b, err := chunks.NewBuilder(d.Algorithm(), s.chunkSize)
	if err != nil || size < 0 {
		return s.NewWriter(d, size) // no maps for this algorithm: nothing to resume by
	}
	var have int64
	if info, err := os.Stat(s.partialPath(d)); err == nil {
		have = info.Size()
	}
	if err := s.makeRoom(size, have); err != nil {
		return nil, err
	}
	s.partialMu.Lock()
	if s.partialOpen[d] {
		// An earlier writer of d is still open (a failed fetch still serving a peer): this one
		// must not share, truncate or remove its file.
		s.partialMu.Unlock()
		return s.NewWriter(d, size)
	}
	if s.partialOpen == nil {
		s.partialOpen = map[digest.Digest]bool{}
	}
	s.partialOpen[d] = true
	// The file is the writer's now: its reservation replaces what the idle file counted.
	s.pending.Add(-s.idle[d])
	delete(s.idle, d)
	s.partialMu.Unlock()
	m := s.partialMap(d)
	if m != nil && m.Size != size {
		m = nil
	}
	flags := os.O_RDWR | os.O_CREATE
	if m == nil {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(s.partialPath(d), flags, 0o644)
	if err != nil {
		s.releasePartial(d)
		return nil, diskio.Error(err)
	}
	w := &Writer{s: s, d: d, expected: size, f: f, maps: b, h: builderHash{b}, partial: true}
	w.reserve(size)
	if m == nil {
		return w, nil
	}
	buf := make([]byte, s.chunkSize)
	for i := range chunks.Count(m.Size, m.ChunkSize) {
		if !m.Covers(i) {
			break
		}
		off, n := m.Range(i)
		if k, err := f.ReadAt(buf[:n], off); int64(k) != n || (err != nil && k == 0) {
			continue
		}
		if m.Verify(i, buf[:n]) == nil {
			if err := w.MarkChunk(i, m); err != nil {
				break
			}
		}
	}
	if held := w.Held().Count(); held > 0 {
		s.log.Info("resuming a partial blob", "digest", d, "chunks_held", held, "chunks", chunks.Count(size, s.chunkSize))
	}
	return w, nil
}

func (s *Store) releasePartial(d digest.Digest) {
	s.partialMu.Lock()
	delete(s.partialOpen, d)
	s.partialMu.Unlock()
}

// recordPartial records m as the map of w's partial file.
func (w *Writer) recordPartial(m *chunks.Map) error {
	if !w.partial || m == nil || m.ChunkSize != w.s.chunkSize {
		return nil
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	return w.s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPartial).Put([]byte(w.d), b) })
}

func (w *Writer) dropPartial() {
	if w.partial {
		_ = w.s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPartial).Delete([]byte(w.d)) })
	}
}

// Suspend ends the writer but keeps a partial file for ResumeWriter: its map is recorded and its
// bytes synced. Other writers are simply closed.
func (w *Writer) Suspend() error {
	if !w.partial {
		return w.Close()
	}
	w.mu.Lock()
	if w.closed || w.committed {
		w.mu.Unlock()
		return w.Close()
	}
	w.closed = true
	w.mu.Unlock()
	m := w.PartialMap()
	var err error
	if m != nil && m.Len() > 1 {
		if err = w.s.ops.Sync(w.f); err == nil {
			err = w.recordPartial(m)
		}
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	kept := m != nil && m.Len() > 1 && err == nil
	if !kept {
		_ = os.Remove(w.f.Name())
		w.dropPartial()
	}
	w.unreserve()
	if kept {
		w.s.keepIdle(w.d, w.f.Name())
	}
	w.releasePartial()
	return err
}

// keepIdle counts d's partial file, just suspended, as idle. Called before the writer's claim on
// the file is released, so no other writer has taken it meanwhile.
func (s *Store) keepIdle(d digest.Digest, path string) {
	info, err := os.Stat(path)
	if err != nil {
		return
	}
	s.partialMu.Lock()
	defer s.partialMu.Unlock()
	s.pending.Add(info.Size() - s.idle[d])
	s.idle[d] = info.Size()
}

// DropPartial removes d's partial file and its record unless a writer has it open: a failed
// fetch's leftovers that disagree with the blob's bound size, or that GC evicts. It returns the
// bytes freed.
func (s *Store) DropPartial(d digest.Digest) int64 {
	s.partialMu.Lock()
	defer s.partialMu.Unlock()
	if s.partialOpen[d] {
		return 0
	}
	_ = os.Remove(s.partialPath(d))
	_ = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPartial).Delete([]byte(d)) })
	n := s.idle[d]
	s.pending.Add(-n)
	delete(s.idle, d)
	return n
}

// releasePartial gives back the writer's claim on its digest's partial file.
func (w *Writer) releasePartial() {
	if w.partial {
		w.released.Do(func() { w.s.releasePartial(w.d) })
	}
}
