package store

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Content being written counts toward the store's usage: a fetch's reservation of its blob's
// size, the bytes of one of unknown size, and a partial file kept for a resume, after a restart
// too. Entries lists an idle partial for GC, not one a fetch has open, and DropPartial frees it.
func TestPartialsCount(t *testing.T) {
	dir := t.TempDir()
	const cs = 64 << 10
	s, err := Open(dir, WithChunkSize(cs))
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("partial "), 128<<10) // 1 MiB
	d := digest.FromBytes(body)
	w, err := s.ResumeWriter(d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if used, _ := s.Usage(); used != int64(len(body)) {
		t.Fatalf("usage with a fetch of 1 MiB reserved = %d", used)
	}
	if _, err := w.Write(body[:256<<10]); err != nil {
		t.Fatal(err)
	}
	if err := w.Suspend(); err != nil {
		t.Fatal(err)
	}
	if used, _ := s.Usage(); used != 256<<10 {
		t.Fatalf("usage with a suspended partial of 256 KiB = %d", used)
	}
	other, err := s.NewWriter(digest.FromString("unknown size"), -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if used, _ := s.Usage(); used != 256<<10+1000 {
		t.Fatalf("usage with 1000 bytes of unknown size written = %d", used)
	}
	other.Close()
	s.Close()

	s, err = Open(dir, WithChunkSize(cs))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if used, _ := s.Usage(); used != 256<<10 {
		t.Fatalf("usage after a restart = %d, want the partial's 256 KiB", used)
	}
	// A writer holding the partial open keeps it from GC.
	w, err = s.ResumeWriter(d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if es, _ := s.Entries(context.Background()); len(es) != 0 {
		t.Fatalf("Entries lists %+v while a fetch has the partial open", es)
	}
	if err := w.Suspend(); err != nil {
		t.Fatal(err)
	}
	es, err := s.Entries(context.Background())
	if err != nil || len(es) != 1 || !es[0].Partial || es[0].Digest != d {
		t.Fatalf("Entries = %+v (%v), want the idle partial", es, err)
	}
	if n := s.DropPartial(es[0].Digest); n != 256<<10 {
		t.Fatalf("DropPartial freed %d", n)
	}
	if used, _ := s.Usage(); used != 0 {
		t.Errorf("usage after DropPartial = %d", used)
	}
	if entries, _ := os.ReadDir(dir + "/partial"); len(entries) != 0 {
		t.Errorf("partial/ holds %d files after DropPartial", len(entries))
	}
}
