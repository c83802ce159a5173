package store

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
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
	put, err := s.PutPin(key, rec)
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
	t0 := time.Now().UTC()
	const key = "registry.example/team/app:v1"
	if !putPin(t, s, key, testPin{Ref: key, Digests: []digest.Digest{d1, blob}, Created: t0}) {
		t.Fatal("PutPin refused a first pin")
	}
	if !s.Pinned(d1) || !s.Pinned(blob) || s.Pinned(d2) {
		t.Fatal("Pinned does not follow the pin's digests")
	}
	if putPin(t, s, key, testPin{Ref: key, Digests: []digest.Digest{d2}, Created: t0.Add(-time.Minute)}) {
		t.Fatal("an older pin replaced a newer one")
	}
	if !putPin(t, s, key, testPin{Ref: key, Digests: []digest.Digest{d2}, Created: t0.Add(time.Minute)}) {
		t.Fatal("a newer pin was refused")
	}
	if !s.Pinned(d2) || s.Pinned(d1) {
		t.Fatal("the index kept the replaced pin's digests")
	}
	putPin(t, s, "hosted:team/app:v1", testPin{Ref: "team/app:v1", Digests: []digest.Digest{d1}, Created: t0})
	rec, ok := s.Pin("hosted:team/app:v1")
	var p testPin
	if !ok || json.Unmarshal(rec, &p) != nil || p.Ref != "team/app:v1" {
		t.Fatalf("the record came back as %s (found %v)", rec, ok)
	}
	if _, err := s.PutPin("bad", []byte("not json")); err == nil {
		t.Error("a record that is not JSON was recorded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	pins, err := s.Pins()
	if err != nil || len(pins) != 2 {
		t.Fatalf("after reopening: %d pins, %v", len(pins), err)
	}
	if found, err := s.DeletePin(key); err != nil || !found {
		t.Fatalf("DeletePin: %v %v", found, err)
	}
	if found, _ := s.DeletePin(key); found {
		t.Fatal("a deleted pin was found again")
	}
	if s.Pinned(d2) || !s.Pinned(d1) {
		t.Fatal("the index does not follow deletes")
	}
}
