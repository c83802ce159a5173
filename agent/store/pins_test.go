package store

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Pins keep their digests from GC, a later pin of the same key replaces an earlier one but never
// the reverse, hosted and upstream pins of the same name are distinct, and pins survive a reopen.
func TestPins(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	d1, d2, blob := digest.FromString("one"), digest.FromString("two"), digest.FromString("layer")
	t0 := time.Now().UTC()
	up := Pin{Ref: "registry.example/team/app:v1", Registry: "registry.example", Repo: "team/app", Tag: "v1",
		Digest: d1, Digests: []digest.Digest{d1, blob}, Created: t0}
	if put, err := s.PutPin(up); err != nil || !put {
		t.Fatalf("PutPin: %v %v", put, err)
	}
	if !s.Pinned(d1) || !s.Pinned(blob) || s.Pinned(d2) {
		t.Fatal("Pinned does not follow the pin's digests")
	}
	older := up
	older.Digest, older.Digests, older.Created = d2, []digest.Digest{d2}, t0.Add(-time.Minute)
	if put, err := s.PutPin(older); err != nil || put {
		t.Fatalf("an older pin replaced a newer one: %v %v", put, err)
	}
	newer := older
	newer.Created = t0.Add(time.Minute)
	if put, err := s.PutPin(newer); err != nil || !put {
		t.Fatalf("a newer pin was refused: %v %v", put, err)
	}
	if !s.Pinned(d2) || s.Pinned(d1) {
		t.Fatal("the index kept the replaced pin's digests")
	}
	hosted := Pin{Hosted: true, Ref: "team/app:v1", Repo: "team/app", Tag: "v1", Digest: d1, Digests: []digest.Digest{d1}, Created: t0}
	if _, err := s.PutPin(hosted); err != nil {
		t.Fatal(err)
	}
	if p, ok := s.Pin(PinKey(true, "team/app:v1")); !ok || !p.Hosted || p.Digest != d1 {
		t.Fatalf("hosted pin: %+v %v", p, ok)
	}
	if _, ok := s.Pin("team/app:v1"); ok {
		t.Fatal("a hosted pin answered for the upstream key")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	pins, err := s.Pins()
	if err != nil || len(pins) != 2 {
		t.Fatalf("after reopening: %d pins, %v", len(pins), err)
	}
	if found, err := s.DeletePin(up.Key()); err != nil || !found {
		t.Fatalf("DeletePin: %v %v", found, err)
	}
	if found, _ := s.DeletePin(up.Key()); found {
		t.Fatal("a deleted pin was found again")
	}
	if s.Pinned(d2) || !s.Pinned(d1) {
		t.Fatal("the index does not follow deletes")
	}
}

// GC with the pins as its keep rule never evicts pinned content.
func TestGCKeepsPinned(t *testing.T) {
	s := openStore(t, t.TempDir())
	var ds []digest.Digest
	for i := range 3 {
		body := []byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9}
		d := digest.FromBytes(body)
		if err := s.PutManifest(d, "application/octet-stream", body); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if _, err := s.PutPin(Pin{Ref: "r.example/a:v1", Repo: "a", Tag: "v1", Digest: ds[1], Digests: []digest.Digest{ds[1]}, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(t.Context(), Policy{High: 1, Keep: s.Pinned}); err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		_, err := s.Stat(d)
		if present := err == nil; present != (i == 1) {
			t.Errorf("blob %d present = %v after GC; only the pinned one should be", i, present)
		}
	}
}
