package gc

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

var discard = slog.New(slog.DiscardHandler)

func TestGCEvictsLeastRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir)
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
		p := filepath.Join(dir, "blobs", "sha256", d.Encoded())
		mt := old.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	s.Touch(ds[0]) // 0 used just now: the LRU victims are 1 and 2
	keep := func(d digest.Digest) bool { return d == ds[1] }

	freed, err := Collect(context.Background(), s, Policy{High: 3500, Low: 2000, Keep: keep}, discard)
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
	if freed, _ := Collect(context.Background(), s, Policy{High: 3500, Low: 1000}, discard); freed != 0 {
		t.Fatalf("GC under the watermark freed %d", freed)
	}
}

// A partial file a failed fetch left counts toward the limit and is evicted like any content;
// one a fetch has open is left alone.
func TestCollectEvictsIdlePartials(t *testing.T) {
	dir := t.TempDir()
	const cs = 64 << 10
	s, err := store.Open(dir, store.WithChunkSize(cs))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := bytes.Repeat([]byte("partial "), 128<<10) // 1 MiB
	d := digest.FromBytes(body)
	w, err := s.ResumeWriter(d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body[:256<<10]); err != nil {
		t.Fatal(err)
	}
	if freed, err := Collect(context.Background(), s, Policy{High: 1}, discard); err != nil || freed != 0 {
		t.Fatalf("a pass freed %d of a partial being written (%v)", freed, err)
	}
	if err := w.Suspend(); err != nil {
		t.Fatal(err)
	}
	freed, err := Collect(context.Background(), s, Policy{High: 1}, discard)
	if err != nil || freed != 256<<10 {
		t.Fatalf("a pass freed %d (%v), want the idle partial's 256 KiB", freed, err)
	}
	if used, _ := s.Usage(); used != 0 {
		t.Errorf("usage after the pass = %d", used)
	}
	if _, ok := s.Partial(d); ok {
		t.Error("the evicted partial is still offered for a resume")
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "partial")); len(entries) != 0 {
		t.Errorf("partial/ holds %d files after the pass", len(entries))
	}
}

// A pass with the pins as its keep rule never evicts pinned content.
func TestCollectKeepsPinned(t *testing.T) {
	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ds []digest.Digest
	for i := range 3 {
		body := []byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9}
		d := digest.FromBytes(body)
		if err := s.PutManifest(d, "application/octet-stream", body); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	rec := `{"ref":"r.example/a:v1","digests":["` + ds[1].String() + `"],"created":"` + time.Now().Format(time.RFC3339Nano) + `"}`
	if _, err := s.Pins().Put("r.example/a:v1", []byte(rec)); err != nil {
		t.Fatal(err)
	}
	if _, err := Collect(t.Context(), s, Policy{High: 1, Keep: s.Pins().Pinned}, discard); err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		_, err := s.Stat(d)
		if present := err == nil; present != (i == 1) {
			t.Errorf("blob %d present = %v after the pass; only the pinned one should be", i, present)
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("blob %d: %v", i, err)
		}
	}
}
