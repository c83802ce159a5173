package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

func TestGCEvictsLeastRecentlyUsed(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ds []digest.Digest
	old := time.Now().Add(-time.Hour)
	for i := 0; i < 4; i++ {
		body := bytes.Repeat([]byte{byte(i)}, 1000)
		d := digest.FromBytes(body)
		if err := s.PutManifest(d, "application/octet-stream", body); err != nil {
			t.Fatal(err)
		}
		// Age them in order: 0 is the oldest.
		p, _ := s.path(d)
		mt := old.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	s.Touch(ds[0]) // 0 used just now: the LRU victims are 1 and 2
	keep := func(d digest.Digest) bool { return d == ds[1] }

	freed, err := s.GC(context.Background(), Policy{High: 3500, Low: 2000, Keep: keep})
	if err != nil {
		t.Fatal(err)
	}
	if freed != 2000 {
		t.Fatalf("freed %d, want 2000", freed)
	}
	for i, want := range []bool{true, true, false, false} {
		_, err := s.Stat(ds[i])
		if got := err == nil; got != want {
			t.Errorf("blob %d present=%v, want %v (%v)", i, got, want, err)
		}
		if !want && !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("blob %d: %v", i, err)
		}
	}
	if used, n := s.Usage(); used != 2000 || n != 2 {
		t.Fatalf("usage %d bytes in %d objects, want 2000 in 2", used, n)
	}
	// Under the high watermark nothing happens.
	if freed, _ := s.GC(context.Background(), Policy{High: 3500, Low: 1000}); freed != 0 {
		t.Fatalf("GC under the watermark freed %d", freed)
	}
}

// Content being written counts toward the store's usage: a fetch's reservation of its blob's
// size, the bytes of one of unknown size, and a partial file kept for a resume, after a restart
// too. GC sees an idle partial as content and evicts it like any other; one being written it
// leaves alone.
func TestPartialsCountAndGCSeesThem(t *testing.T) {
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
	if freed, err := s.GC(context.Background(), Policy{High: 1, Low: 0}); err != nil || freed != 0 {
		t.Fatalf("GC of a partial being written freed %d (%v)", freed, err)
	}
	if err := w.Suspend(); err != nil {
		t.Fatal(err)
	}
	freed, err := s.GC(context.Background(), Policy{High: 1, Low: 0})
	if err != nil || freed != 256<<10 {
		t.Fatalf("GC freed %d (%v), want the idle partial's 256 KiB", freed, err)
	}
	if used, _ := s.Usage(); used != 0 {
		t.Errorf("usage after GC = %d", used)
	}
	if _, ok := s.Partial(d); ok {
		t.Error("the evicted partial is still offered for a resume")
	}
	if entries, _ := os.ReadDir(dir + "/partial"); len(entries) != 0 {
		t.Errorf("partial/ holds %d files after GC", len(entries))
	}
}
