// Package records keeps the small records a node stores beside its content, each in a bucket of
// the store's metadata database (agent/store/layout names them): tag resolutions (Tags), and pins
// and holds (Pins), which keep content from garbage collection. The store opens them on its
// database and hands them out (Store.Tags, Store.Pins); every update is a bbolt transaction.
package records

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/agent/store/layout"
	"github.com/shoal-oci/shoal/internal/tags"
)

var bucketTags = []byte(layout.TagsBucket)

// Tags are the tag resolutions a node recorded. Safe for concurrent use.
type Tags struct {
	db *bolt.DB
	// puts counts records written since the last sweep of old ones.
	puts atomic.Int64
}

// NewTags keeps tag records in db, whose bucket layout.TagsBucket exists.
func NewTags(db *bolt.DB) *Tags { return &Tags{db: db} }

// tagSweepEvery is how many tag records are written between sweeps of the whole bucket.
const tagSweepEvery = 1024

// Put records a tag resolution under key. Keys are chosen by the caller; a common prefix
// (tags.Group) groups the resolutions of one tag (for different Accept sets), of which the
// newest tags.MaxPerTag are kept. Every so often the whole bucket is swept: records older than
// tags.MaxAge go, and past tags.MaxRecords the oldest do.
func (t *Tags) Put(key string, rec tags.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	sweep := t.puts.Add(1)%tagSweepEvery == 1
	if err := t.db.Update(func(tx *bolt.Tx) error {
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

// Delete forgets every resolution whose key starts with prefix.
func (t *Tags) Delete(prefix string) error {
	return t.db.Update(func(tx *bolt.Tx) error {
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

// List returns the resolutions whose keys start with prefix, by key; records past tags.MaxAge
// are left out.
func (t *Tags) List(prefix string) (map[string]tags.Record, error) {
	out := map[string]tags.Record{}
	cutoff := time.Now().Add(-tags.MaxAge)
	err := t.db.View(func(tx *bolt.Tx) error {
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
