package store

import (
	"bytes"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/tags"
)

// PutTag records a tag resolution under key. Keys are chosen by the caller; a common prefix
// groups the resolutions of one tag (for different Accept sets).
func (s *Store) PutTag(key string, rec tags.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTags).Put([]byte(key), b) }); err != nil {
		return fmt.Errorf("store: recording tag: %w", err)
	}
	return nil
}

// DeleteTags forgets every resolution whose key starts with prefix.
func (s *Store) DeleteTags(prefix string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTags).Cursor()
		p := []byte(prefix)
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Seek(p) {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Tags returns the resolutions whose keys start with prefix, by key.
func (s *Store) Tags(prefix string) (map[string]tags.Record, error) {
	out := map[string]tags.Record{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTags).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var rec tags.Record
			if json.Unmarshal(v, &rec) == nil {
				out[string(k)] = rec
			}
		}
		return nil
	})
	return out, err
}
