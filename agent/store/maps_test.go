package store

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/opencontainers/go-digest"
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
