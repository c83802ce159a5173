package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

var bucketPins = []byte("pins")

// Pin keeps an image's content from garbage collection. It is recorded under its Ref.
type Pin struct {
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
	Replicas int       `json:"replicas,omitempty"`
	Created  time.Time `json:"created"`
}

// PutPin records p, replacing a pin of the same Ref. It is durable when PutPin returns.
func (s *Store) PutPin(p Pin) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPins).Put([]byte(p.Ref), b) }); err != nil {
		return fmt.Errorf("store: recording pin: %w", err)
	}
	s.pinsChanged()
	return nil
}

// DeletePin removes the pin of ref, reporting whether there was one.
func (s *Store) DeletePin(ref string) (bool, error) {
	var found bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPins)
		found = b.Get([]byte(ref)) != nil
		return b.Delete([]byte(ref))
	})
	if err != nil {
		return false, fmt.Errorf("store: removing pin: %w", err)
	}
	s.pinsChanged()
	return found, nil
}

// Pins returns every pin, ordered by Ref.
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

// Pin returns the pin of ref.
func (s *Store) Pin(ref string) (Pin, bool) {
	var p Pin
	var ok bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketPins).Get([]byte(ref)); v != nil {
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
