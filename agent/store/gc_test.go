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
