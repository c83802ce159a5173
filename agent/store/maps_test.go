package store

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

// Content committed through a Writer has its chunk map recorded, and the map verifies it.
func TestCommitRecordsChunkMap(t *testing.T) {
	s, err := Open(t.TempDir(), WithChunkSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, 300<<10+7)
	rand.Read(data)
	d := digest.FromBytes(data)
	w, err := s.NewWriter(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; {
		k := min(len(p), 10007)
		if _, err := w.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	if err := w.Commit(""); err != nil {
		t.Fatal(err)
	}
	w.Close()
	m, err := s.ChunkMap(context.Background(), d, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != 5 {
		t.Fatalf("%d chunks", m.Len())
	}
	for i := 0; i < m.Len(); i++ {
		off, n := m.Range(i)
		if err := m.Verify(i, data[off:off+n]); err != nil {
			t.Fatal(err)
		}
	}
	// Another chunk size is computed from the file on demand.
	m2, err := s.ChunkMap(context.Background(), d, 128<<10)
	if err != nil || m2.Len() != 3 {
		t.Fatalf("computed map: %v", err)
	}
	if es, err := s.Entries(context.Background()); err != nil || len(es) != 1 || es[0].Digest != d || es[0].Partial {
		t.Fatalf("Entries = %+v (%v)", es, err)
	}
}

// Chunks verified by the caller are not hashed again; plain bytes after them are hashed from the
// map's state, and a wrong plain byte still fails the commit.
func TestChunksThenPlain(t *testing.T) {
	const cs = 64 << 10
	data := make([]byte, 5*cs+99)
	rand.Read(data)
	d := digest.FromBytes(data)
	b, _ := chunks.NewBuilder(digest.SHA256, cs)
	b.Write(data)
	m := b.Map()
	for _, tc := range []struct {
		name     string
		verified int // bytes written as verified
		tamper   bool
	}{
		{"all verified", len(data), false},
		{"two chunks verified, rest plain", 2 * cs, false},
		{"two chunks verified, rest plain and wrong", 2 * cs, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), WithChunkSize(cs))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			w, _ := s.NewWriter(d, int64(len(data)))
			defer w.Close()
			for i := 0; int64(i)*cs < int64(tc.verified); i++ {
				off, n := m.Range(i)
				if _, err := w.WriteAt(data[off:off+n], off); err != nil {
					t.Fatal(err)
				}
				if err := w.MarkChunk(i, m); err != nil {
					t.Fatal(err)
				}
			}
			rest := append([]byte(nil), data[tc.verified:]...)
			if tc.tamper {
				rest[10] ^= 1
			}
			if _, err := w.Write(rest); err != nil {
				t.Fatal(err)
			}
			err = w.Commit("")
			if tc.tamper {
				if !errors.Is(err, errdefs.ErrDigestMismatch) {
					t.Fatalf("tampered plain bytes committed: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.ChunkMap(context.Background(), d, cs)
			if err != nil || !got.Equal(m) {
				t.Fatalf("recorded map: %v", err)
			}
		})
	}
}

// Chunks landed out of order are served only once marked, the prefix grows over them, and the
// content commits with the map they were verified against. A resume in order from the prefix
// drops the chunks held past it.
func TestChunksOutOfOrder(t *testing.T) {
	const cs = 64 << 10
	data := make([]byte, 5*cs+99)
	rand.Read(data)
	d := digest.FromBytes(data)
	b, _ := chunks.NewBuilder(digest.SHA256, cs)
	b.Write(data)
	m := b.Map()
	m.Digest = d
	s, err := Open(t.TempDir(), WithChunkSize(cs))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	land := func(w *Writer, i int) {
		t.Helper()
		off, n := m.Range(i)
		if _, err := w.WriteAt(data[off:off+n], off); err != nil {
			t.Fatal(err)
		}
		if w.Holds(off, n) {
			t.Fatalf("chunk %d held before it is marked", i)
		}
		if err := w.MarkChunk(i, m); err != nil {
			t.Fatal(err)
		}
	}

	w, _ := s.NewWriter(d, int64(len(data)))
	defer w.Close()
	land(w, 3)
	land(w, 5)
	if w.Written() != 0 || !w.Holds(3*cs, cs) || w.Held().Count() != 2 {
		t.Fatalf("after chunks 3 and 5: prefix %d, held %d", w.Written(), w.Held().Count())
	}
	if _, err := w.WriteAt(data[3*cs:3*cs+10], 3*cs); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("write over a held chunk: %v", err)
	}
	land(w, 0)
	land(w, 1)
	if w.Written() != 2*cs {
		t.Fatalf("prefix %d, want %d", w.Written(), 2*cs)
	}
	other := &chunks.Map{Digest: d, Size: m.Size, ChunkSize: cs, States: append([][]byte{m.States[0]}, make([]byte, 32))}
	if err := w.MarkChunk(2, other); !errors.Is(err, chunks.ErrMismatch) {
		t.Fatalf("a disagreeing map: %v", err)
	}
	if err := w.Verify(); !errors.Is(err, errdefs.ErrDigestMismatch) {
		t.Fatalf("verify with chunks missing: %v", err)
	}
	land(w, 2)
	land(w, 4)
	if w.Written() != int64(len(data)) || !w.Held().Full() {
		t.Fatalf("prefix %d after every chunk", w.Written())
	}
	if err := w.Commit(""); err != nil {
		t.Fatal(err)
	}
	got, err := s.ChunkMap(context.Background(), d, cs)
	if err != nil || !got.Equal(m) {
		t.Fatalf("recorded map: %v", err)
	}

	// A resume in order from the prefix: chunks held past it are written over, and a wrong byte
	// there fails the commit.
	d2 := digest.FromBytes(data[:4*cs])
	b2, _ := chunks.NewBuilder(digest.SHA256, cs)
	b2.Write(data[:4*cs])
	m2 := b2.Map()
	m2.Digest = d2
	w2, _ := s.NewWriter(d2, 4*cs)
	defer w2.Close()
	for _, i := range []int{0, 2} {
		off, n := m2.Range(i)
		w2.WriteAt(data[off:off+n], off)
		if err := w2.MarkChunk(i, m2); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w2.Write(data[cs : 4*cs]); err != nil {
		t.Fatal(err)
	}
	if w2.Holds(2*cs, cs) || w2.Written() != 4*cs {
		t.Fatalf("in-order resume: prefix %d", w2.Written())
	}
	if err := w2.Commit(""); err != nil {
		t.Fatal(err)
	}
}

// A suspended writer's partial survives reopening the store and resumes with the chunks that
// still verify; files without a record are dropped at open.
func TestPartialResume(t *testing.T) {
	const cs = 64 << 10
	data := make([]byte, 4*cs+5)
	rand.Read(data)
	d := digest.FromBytes(data)
	dir := t.TempDir()
	s, err := Open(dir, WithChunkSize(cs))
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.ResumeWriter(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:2*cs+100]); err != nil {
		t.Fatal(err)
	}
	if err := w.Suspend(); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(dir, "partial", "sha256-"+digest.FromString("x").Encoded())
	if err := os.WriteFile(orphan, []byte("left by a crash before its record"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(dir, WithChunkSize(cs))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatalf("orphan partial kept: %v", err)
	}
	if size, ok := s.Partial(d); !ok || size != int64(len(data)) {
		t.Fatalf("Partial = %d, %v", size, ok)
	}
	w, err = s.ResumeWriter(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Written() != 2*cs || w.Held().Count() != 2 {
		t.Fatalf("resumed with prefix %d and %d chunks, want the 2 whole chunks", w.Written(), w.Held().Count())
	}
	if _, err := w.Write(data[2*cs:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(""); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Partial(d); ok {
		t.Fatal("partial still recorded after the commit")
	}
}

// A blob of more chunks than a map may have is still stored: it commits, verifies by its digest
// and is served whole; it just has no map, so peers get an error for one rather than a wrong map.
// (With 512 KiB pieces that is a blob over 128 GiB; 64-byte chunks reach the cap at 16 MiB.)
func TestBlobTooLargeForAMapCommits(t *testing.T) {
	const cs = 64
	s, err := Open(t.TempDir(), WithChunkSize(cs))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, chunks.MaxChunks*cs+4096)
	rand.Read(data)
	d := digest.FromBytes(data)
	w, err := s.NewWriter(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for p := data; len(p) > 0; {
		k := min(len(p), 256<<10)
		if _, err := w.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
		if m := w.PartialMap(); m != nil {
			t.Fatalf("a partial map of %d states for a blob too large for a map", m.Len())
		}
	}
	if err := w.Commit(""); err != nil {
		t.Fatalf("commit: %v", err)
	}
	f, info, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v := d.Verifier()
	if n, err := io.Copy(v, f); err != nil || n != info.Size || !v.Verified() {
		t.Fatalf("stored content: %d bytes, %v, verified %v", n, err, v.Verified())
	}
	// Said at once, without taking a map slot for a read: with every slot taken, it still is.
	for range maxMapComputations {
		s.mapSlots <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.ChunkMap(ctx, d, cs); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("ChunkMap = %v, want ErrTooLarge", err)
	}
}
