package ingest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

func openStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func tmpEntries(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func ingest(t *testing.T, s *store.Store, alg digest.Algorithm, parts ...[]byte) *Ingest {
	t.Helper()
	in, err := New(s, alg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close() })
	for _, p := range parts {
		if _, err := in.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	return in
}

// TestIngest commits content named only at the end, in the algorithm hashed while writing and in
// another one (read back), with the chunk map of a multi-chunk blob recorded as it was built.
func TestIngest(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("0123456789abcdef"), 20<<10) // 320 KiB: several 64 KiB chunks
	for _, tc := range []struct {
		name   string
		hashed digest.Algorithm
		named  digest.Algorithm
	}{
		{"sha256", digest.SHA256, digest.SHA256},
		{"sha512", digest.SHA512, digest.SHA512},
		{"named sha512 after hashing sha256", "", digest.SHA512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s, err := store.Open(dir, store.WithChunkSize(64<<10))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			in := ingest(t, s, tc.hashed, body[:1000], body[1000:])
			if in.Size() != int64(len(body)) {
				t.Fatalf("Size = %d", in.Size())
			}
			// A push's bytes count toward the store's usage while it is written.
			if b, n := s.Usage(); b != int64(len(body)) || n != 0 {
				t.Errorf("Usage while ingesting = %d bytes, %d objects", b, n)
			}
			d := tc.named.FromBytes(body)
			created, err := in.Commit(d)
			if err != nil || !created {
				t.Fatalf("Commit = %v, %v", created, err)
			}
			f, info, err := s.Open(d)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			if info.Size != int64(len(body)) {
				t.Errorf("committed size %d", info.Size)
			}
			if b, n := s.Usage(); b != int64(len(body)) || n != 1 {
				t.Errorf("Usage = %d bytes, %d objects", b, n)
			}
			if d.Algorithm() == digest.SHA256 {
				m, err := s.ChunkMap(context.Background(), d, 64<<10)
				if err != nil || m.Digest != d || m.Len() != chunks.Count(int64(len(body)), 64<<10) {
					t.Errorf("chunk map %+v (%v)", m, err)
				}
			}
			if err := in.Close(); err != nil {
				t.Errorf("Close after Commit: %v", err)
			}
			if e := tmpEntries(t, dir); len(e) != 0 {
				t.Errorf("tmp/ holds %d entries", len(e))
			}
		})
	}
}

func TestIngestRejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	in := ingest(t, s, "", []byte("truncated"))
	d := digest.FromString("truncated but longer")
	if _, err := in.Commit(d); !errors.Is(err, errdefs.ErrDigestMismatch) {
		t.Fatalf("Commit of other bytes = %v, want a digest mismatch", err)
	}
	if _, err := s.Stat(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("mismatched content is visible: %v", err)
	}
	if _, err := in.Commit("sha256:short"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Commit of a malformed digest = %v", err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if e := tmpEntries(t, dir); len(e) != 0 {
		t.Errorf("tmp/ holds %d entries after Close", len(e))
	}
	if b, _ := s.Usage(); b != 0 {
		t.Errorf("Usage after an abandoned ingest = %d", b)
	}
	if _, err := in.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
	if _, err := New(s, "md5"); err == nil {
		t.Error("an unavailable algorithm was accepted")
	}
}

// TestIngestTwice: the same content committed by two ingests is stored and counted once.
func TestIngestTwice(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	body := []byte("pushed twice")
	a, b := ingest(t, s, "", body), ingest(t, s, "", body)
	if created, err := a.Commit(digest.FromBytes(body)); err != nil || !created {
		t.Fatalf("first Commit = %v, %v", created, err)
	}
	if created, err := b.Commit(digest.FromBytes(body)); err != nil || created {
		t.Fatalf("second Commit = %v, %v", created, err)
	}
	if _, n := s.Usage(); n != 1 {
		t.Errorf("%d objects", n)
	}
	if e := tmpEntries(t, dir); len(e) != 0 {
		t.Errorf("tmp/ holds %d entries", len(e))
	}
}
