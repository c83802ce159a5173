package store

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"

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
	var seen []digest.Digest
	s.Walk(func(x digest.Digest) bool { seen = append(seen, x); return true })
	if len(seen) != 1 || seen[0] != d {
		t.Fatalf("walk saw %v", seen)
	}
}

// Bytes verified by the caller are not hashed again; plain bytes after them are hashed from the
// map's state, and a wrong plain byte still fails the commit.
func TestWriteVerifiedThenPlain(t *testing.T) {
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
			if _, err := w.WriteVerified(data[:tc.verified], m); err != nil {
				t.Fatal(err)
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
