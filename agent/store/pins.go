package store

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

var bucketPins = []byte("pins")

// A pin keeps content from garbage collection. The store knows of a pin only what it needs:
// its key, the digests it keeps and when its content was chosen. The rest of the record is its
// owner's (agent/pins: which image, which platforms, how many replicas), kept as the JSON the
// owner wrote, which must carry those two fields as "digests" and "created".
type pinFields struct {
	Digests []digest.Digest `json:"digests"`
	Created time.Time       `json:"created"`
}

// PutPin records the JSON record rec under key unless a pin of the same key was created later
// (a newer push or preheat of the same reference), reporting whether it did. It is durable when
// PutPin returns. Every digest the pin names must be committed: a pin never names missing
// content (an error wrapping errdefs.ErrNotFound says which is missing). The check and the
// record are one step against Evict, so content GC takes meanwhile is never pinned.
func (s *Store) PutPin(key string, rec []byte) (bool, error) {
	var f pinFields
	if err := json.Unmarshal(rec, &f); err != nil {
		return false, fmt.Errorf("store: pin record of %q: %w", key, err)
	}
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	for _, d := range f.Digests {
		p, err := s.path(d)
		if err != nil {
			return false, err
		}
		if _, err := os.Stat(p); err != nil {
			return false, fmt.Errorf("store: pin %q names %s, which is not held: %w", key, d, errdefs.ErrNotFound)
		}
	}
	put := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketPins)
		if v := bk.Get([]byte(key)); v != nil {
			var cur pinFields
			if json.Unmarshal(v, &cur) == nil && cur.Created.After(f.Created) {
				return nil
			}
		}
		put = true
		return bk.Put([]byte(key), rec)
	})
	if err != nil {
		return false, fmt.Errorf("store: recording pin: %w", err)
	}
	s.pinsChanged()
	return put, nil
}

// DeletePin removes the pin of key, reporting whether there was one.
func (s *Store) DeletePin(key string) (bool, error) {
	var found bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPins)
		found = b.Get([]byte(key)) != nil
		return b.Delete([]byte(key))
	})
	if err != nil {
		return false, fmt.Errorf("store: removing pin: %w", err)
	}
	s.pinsChanged()
	return found, nil
}

// Pins returns every pin record, ordered by key.
func (s *Store) Pins() ([][]byte, error) {
	var out [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPins).ForEach(func(_, v []byte) error {
			out = append(out, append([]byte(nil), v...))
			return nil
		})
	})
	return out, err
}

// Pin returns the record of the pin of key.
func (s *Store) Pin(key string) ([]byte, bool) {
	var rec []byte
	_ = s.db.View(func(tx *bolt.Tx) error { // a read that fails finds no pin
		if v := tx.Bucket(bucketPins).Get([]byte(key)); v != nil {
			rec = append([]byte(nil), v...)
		}
		return nil
	})
	return rec, rec != nil
}

// Hold keeps ds from garbage collection until release is called (once; later calls do
// nothing), as a pin does: the content of a preheat or pin in progress, so that a preheat larger
// than the room left does not evict its own first blobs before its pin is recorded. Holds live in
// memory only; a restart drops them with the work they protected.
func (s *Store) Hold(ds ...digest.Digest) (release func()) {
	s.pinMu.Lock()
	if s.held == nil {
		s.held = map[digest.Digest]int{}
	}
	for _, d := range ds {
		s.held[d]++
	}
	s.pinMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.pinMu.Lock()
			defer s.pinMu.Unlock()
			for _, d := range ds {
				if s.held[d]--; s.held[d] <= 0 {
					delete(s.held, d)
				}
			}
		})
	}
}

// Pinned reports whether any pin or Hold keeps d. It reads an in-memory index, so GC can ask per
// file.
func (s *Store) Pinned(d digest.Digest) bool {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	if s.held[d] > 0 {
		return true
	}
	if s.pinned == nil {
		s.pinned = map[digest.Digest]int{}
		recs, err := s.Pins()
		if err != nil {
			s.log.Error("reading pins; GC keeps everything until they can be read", "err", err)
			s.pinned = nil
			return true
		}
		for _, rec := range recs {
			var f pinFields
			if json.Unmarshal(rec, &f) != nil {
				continue // an unreadable record pins nothing; it does not stop the others
			}
			for _, x := range f.Digests {
				s.pinned[x]++
			}
		}
	}
	return s.pinned[d] > 0
}

// pinsChanged drops the index; the next Pinned rebuilds it.
func (s *Store) pinsChanged() {
	s.pinMu.Lock()
	s.pinned = nil
	s.pinMu.Unlock()
}
