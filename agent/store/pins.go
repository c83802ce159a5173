package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

var bucketPins = []byte("pins")

// Pin keeps an image's content from garbage collection. It is recorded under its Key.
type Pin struct {
	// Hosted marks an image pushed to a seed: Repo and Tag name it in the hosted repositories,
	// which have no registry, and Ref is repo:tag.
	Hosted bool `json:"hosted,omitempty"`
	// Ref is the image reference as pinned, normalised: registry/repo:tag or registry/repo@digest;
	// a hosted (pushed) image has no registry part.
	Ref      string `json:"ref"`
	Registry string `json:"registry,omitempty"`
	Repo     string `json:"repo"`
	Tag      string `json:"tag,omitempty"`
	// Digest is the root manifest (an index or a manifest) the reference resolved to, and
	// MediaType its media type.
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType,omitempty"`
	// Digests is every piece of content the pin keeps: its Manifests manifests first, then
	// configs and layers.
	Digests   []digest.Digest `json:"digests"`
	Manifests int             `json:"manifests"`
	// Bytes is the total size of Digests.
	Bytes int64 `json:"bytes"`
	// Platforms and AllPlatforms are the index entries the pin selected, so another seed
	// replicating it selects the same.
	Platforms    []string `json:"platforms,omitempty"`
	AllPlatforms bool     `json:"allPlatforms,omitempty"`
	// Replicas is how many seeds should hold the image (0 or 1: this node only).
	Replicas int `json:"replicas,omitempty"`
	// Created is when the pin's content was chosen: the push of a hosted tag, or the preheat
	// that resolved the reference. Replicas carry it unchanged, so the newest choice wins.
	Created time.Time `json:"created"`
}

// Key is what the pin is recorded under: hosted and upstream images never share a key.
func (p Pin) Key() string { return PinKey(p.Hosted, p.Ref) }

// PinKey is the key of the pin of ref.
func PinKey(hosted bool, ref string) string {
	if hosted {
		return "hosted:" + ref
	}
	return ref
}

// PutPin records p unless a pin of the same key was created later (a newer push or preheat of
// the same reference), reporting whether it did. It is durable when PutPin returns.
func (s *Store) PutPin(p Pin) (bool, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return false, err
	}
	put := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketPins)
		if v := bk.Get([]byte(p.Key())); v != nil {
			var cur Pin
			if json.Unmarshal(v, &cur) == nil && cur.Created.After(p.Created) {
				return nil
			}
		}
		put = true
		return bk.Put([]byte(p.Key()), b)
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

// Pins returns every pin, ordered by key.
func (s *Store) Pins() ([]Pin, error) {
	var out []Pin
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPins).ForEach(func(_, v []byte) error {
			var p Pin
			if err := json.Unmarshal(v, &p); err != nil {
				return nil // an unreadable record pins nothing; it does not stop the others
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// Pin returns the pin recorded under key.
func (s *Store) Pin(key string) (Pin, bool) {
	var p Pin
	var ok bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketPins).Get([]byte(key)); v != nil {
			ok = json.Unmarshal(v, &p) == nil
		}
		return nil
	})
	return p, ok
}

// Pinned reports whether any pin keeps d. It reads an in-memory index, so GC can ask per file.
func (s *Store) Pinned(d digest.Digest) bool {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	if s.pinned == nil {
		s.pinned = map[digest.Digest]int{}
		pins, _ := s.Pins()
		for _, p := range pins {
			for _, x := range p.Digests {
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
