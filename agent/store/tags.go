package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/tags"
)

// tagSweepEvery is how many tag records are written between sweeps of the whole bucket.
const tagSweepEvery = 1024

// PutTag records a tag resolution under key. Keys are chosen by the caller; a common prefix
// (tags.Group) groups the resolutions of one tag (for different Accept sets), of which the
// newest tags.MaxPerTag are kept. Every so often the whole bucket is swept: records older than
// tags.MaxAge go, and past tags.MaxRecords the oldest do.
func (s *Store) PutTag(key string, rec tags.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	sweep := s.tagPuts.Add(1)%tagSweepEvery == 1
	if err := s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketTags)
		if err := bk.Put([]byte(key), b); err != nil {
			return err
		}
		if err := trimTags(bk, []byte(tags.Group(key)), tags.MaxPerTag, time.Time{}); err != nil {
			return err
		}
		if sweep {
			return trimTags(bk, nil, tags.MaxRecords, time.Now().Add(-tags.MaxAge))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("store: recording tag: %w", err)
	}
	return nil
}

// trimTags removes the records under prefix resolved before cutoff, then the oldest past max.
func trimTags(bk *bolt.Bucket, prefix []byte, max int, cutoff time.Time) error {
	type entry struct {
		key      []byte
		resolved time.Time
	}
	var keep []entry
	var drop [][]byte
	c := bk.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var rec tags.Record
		if json.Unmarshal(v, &rec) != nil || rec.Resolved.Before(cutoff) {
			drop = append(drop, bytes.Clone(k))
			continue
		}
		keep = append(keep, entry{bytes.Clone(k), rec.Resolved})
	}
	if len(keep) > max {
		sort.Slice(keep, func(i, j int) bool { return keep[i].resolved.After(keep[j].resolved) })
		for _, e := range keep[max:] {
			drop = append(drop, e.key)
		}
	}
	for _, k := range drop {
		if err := bk.Delete(k); err != nil {
			return err
		}
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

// Tags returns the resolutions whose keys start with prefix, by key; records past tags.MaxAge
// are left out.
func (s *Store) Tags(prefix string) (map[string]tags.Record, error) {
	out := map[string]tags.Record{}
	cutoff := time.Now().Add(-tags.MaxAge)
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTags).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var rec tags.Record
			if json.Unmarshal(v, &rec) == nil && !rec.Resolved.Before(cutoff) {
				out[string(k)] = rec
			}
		}
		return nil
	})
	return out, err
}
