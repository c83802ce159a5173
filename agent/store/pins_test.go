package store

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// testPin is a pin record as an owner writes it: the store reads only digests and created.
type testPin struct {
	Ref     string          `json:"ref"`
	Digests []digest.Digest `json:"digests"`
	Created time.Time       `json:"created"`
}

func putPin(t *testing.T, s *Store, key string, p testPin) bool {
	t.Helper()
	rec, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	put, err := s.Pins().Put(key, rec)
	if err != nil {
		t.Fatal(err)
	}
	return put
}

// Pins keep their digests from GC, a later pin of the same key replaces an earlier one but never
// the reverse, hosted and upstream pins of the same name are distinct, and pins survive a reopen.
func TestPins(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	d1, d2, blob := digest.FromString("one"), digest.FromString("two"), digest.FromString("layer")
	for _, c := range []string{"one", "two", "layer"} {
		commit(t, s, []byte(c))
	}
	t0 := time.Now().UTC()
	const key = "registry.example/team/app:v1"
	if !putPin(t, s, key, testPin{Ref: key, Digests: []digest.Digest{d1, blob}, Created: t0}) {
		t.Fatal("PutPin refused a first pin")
	}
	if !s.Pins().Pinned(d1) || !s.Pins().Pinned(blob) || s.Pins().Pinned(d2) {
		t.Fatal("Pinned does not follow the pin's digests")
	}
	if putPin(t, s, key, testPin{Ref: key, Digests: []digest.Digest{d2}, Created: t0.Add(-time.Minute)}) {
		t.Fatal("an older pin replaced a newer one")
	}
	if !putPin(t, s, key, testPin{Ref: key, Digests: []digest.Digest{d2}, Created: t0.Add(time.Minute)}) {
		t.Fatal("a newer pin was refused")
	}
	if !s.Pins().Pinned(d2) || s.Pins().Pinned(d1) {
		t.Fatal("the index kept the replaced pin's digests")
	}
	putPin(t, s, "hosted:team/app:v1", testPin{Ref: "team/app:v1", Digests: []digest.Digest{d1}, Created: t0})
	rec, ok := s.Pins().Get("hosted:team/app:v1")
	var p testPin
	if !ok || json.Unmarshal(rec, &p) != nil || p.Ref != "team/app:v1" {
		t.Fatalf("the record came back as %s (found %v)", rec, ok)
	}
	if _, err := s.Pins().Put("bad", []byte("not json")); err == nil {
		t.Error("a record that is not JSON was recorded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	pins, err := s.Pins().All()
	if err != nil || len(pins) != 2 {
		t.Fatalf("after reopening: %d pins, %v", len(pins), err)
	}
	if found, err := s.Pins().Delete(key); err != nil || !found {
		t.Fatalf("DeletePin: %v %v", found, err)
	}
	if found, _ := s.Pins().Delete(key); found {
		t.Fatal("a deleted pin was found again")
	}
	if s.Pins().Pinned(d2) || !s.Pins().Pinned(d1) {
		t.Fatal("the index does not follow deletes")
	}
}

// commit stores b as committed content.
func commit(t *testing.T, s *Store, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	w, err := s.NewWriter(d, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(""); err != nil {
		t.Fatal(err)
	}
	return d
}

// A pin never names content the store does not hold: one naming evicted content is refused.
// Held content (a preheat in progress) is kept from eviction like pinned content, and a pin
// recorded after the collector chose a digest keeps it.
func TestPinsNameOnlyHeldContent(t *testing.T) {
	s := openStore(t, t.TempDir())
	a, b := commit(t, s, []byte("a")), commit(t, s, []byte("b"))
	keep := func(d digest.Digest) bool { return s.Pins().Pinned(d) }

	release := s.Pins().Hold(a, b)
	if evicted, err := s.Evict(a, keep); err != nil || evicted {
		t.Fatalf("Evict of held content = %v, %v", evicted, err)
	}
	release()
	release() // a second call does nothing
	if s.Pins().Pinned(a) {
		t.Fatal("released content is still held")
	}
	if evicted, err := s.Evict(a, keep); err != nil || !evicted {
		t.Fatalf("Evict = %v, %v", evicted, err)
	}
	rec, _ := json.Marshal(testPin{Ref: "r", Digests: []digest.Digest{a, b}, Created: time.Now()})
	if _, err := s.Pins().Put("r", rec); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("PutPin naming evicted content = %v, want not found", err)
	}
	if _, ok := s.Pins().Get("r"); ok || s.Pins().Pinned(b) {
		t.Fatal("a pin naming evicted content was recorded")
	}
	rec, _ = json.Marshal(testPin{Ref: "r", Digests: []digest.Digest{b}, Created: time.Now()})
	if _, err := s.Pins().Put("r", rec); err != nil {
		t.Fatal(err)
	}
	if evicted, err := s.Evict(b, keep); err != nil || evicted {
		t.Fatalf("Evict of pinned content = %v, %v", evicted, err)
	}
}
