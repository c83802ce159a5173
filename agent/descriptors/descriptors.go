// Package descriptors keeps what the manifests a node verified say about the content they list:
// each listed digest's size, and the repositories whose manifests list it. A blob's size is
// metadata that no digest check proves until the last byte is in, so a node takes it only from
// the origin, authorized seeds, or its own records: these. They are kept in a small bbolt file
// beside the store (<data-dir>/descriptors.db), bounded in records and in repositories per
// record.
package descriptors

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/shoal-oci/shoal/internal/oci"
)

var bucket = []byte("descriptors")

const (
	// MaxRepositories bounds the repositories kept per digest; the most recent are kept.
	MaxRepositories = 16
	// maxDescriptors bounds the descriptors taken from one manifest.
	maxDescriptors = 1024
	// DefaultMaxRecords bounds the records kept; past it the least recently listed quarter goes.
	DefaultMaxRecords = 1 << 17
)

// Record is what the node's verified manifests say of one digest.
type Record struct {
	// Size is the size they list, or -1 when two of them listed different sizes: then the
	// records decide nothing, and the size must come from the origin or a seed.
	Size int64 `json:"size"`
	// Repositories are "registry/repository" names whose manifests list the digest (registry ""
	// for a hosted repository), most recent first, at most MaxRepositories.
	Repositories []string `json:"repositories"`
	// Listed is when a manifest last listed it.
	Listed time.Time `json:"listed"`
}

// Index is the record store. It is safe for concurrent use.
type Index struct {
	db  *bolt.DB
	max int
	mu  sync.Mutex // serialises writers so the record count stays exact
	n   int
}

// Open opens (creating if needed) the index in dir; max bounds its records (0: the default).
func Open(dir string, max int) (*Index, error) {
	if max <= 0 {
		max = DefaultMaxRecords
	}
	db, err := bolt.Open(filepath.Join(dir, "descriptors.db"), 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("descriptors: data directory %s is in use by another process", dir)
		}
		return nil, fmt.Errorf("descriptors: %w", err)
	}
	x := &Index{db: db, max: max}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		x.n = b.Stats().KeyN
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("descriptors: %w", err)
	}
	return x, nil
}

// Close releases the file.
func (x *Index) Close() error { return x.db.Close() }

// Lookup returns the record of d.
func (x *Index) Lookup(d digest.Digest) (Record, bool) {
	var rec Record
	found := false
	_ = x.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucket).Get([]byte(d)); v != nil {
			found = json.Unmarshal(v, &rec) == nil
		}
		return nil
	})
	return rec, found
}

// Size returns the size the node's verified manifests list for d; false when none does, or when
// they disagree.
func (x *Index) Size(d digest.Digest) (int64, bool) {
	rec, ok := x.Lookup(d)
	if !ok || rec.Size < 0 {
		return 0, false
	}
	return rec.Size, true
}

// RecordManifest records what a manifest lists: its config, layers and blobs, or an index's
// manifests. The caller verified body against its digest and serves it for repository repo of
// registry (the host, "" for a hosted repository). A body that is not a manifest records
// nothing. Descriptors already recorded for that repository cost no write.
func (x *Index) RecordManifest(registry, repo string, body []byte) error {
	var m oci.Manifest
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	var ds []oci.Descriptor
	if m.Config != nil {
		ds = append(ds, *m.Config)
	}
	ds = append(append(append(ds, m.Layers...), m.Blobs...), m.Manifests...)
	if len(ds) > maxDescriptors {
		ds = ds[:maxDescriptors]
	}
	ds = slices.DeleteFunc(ds, func(d oci.Descriptor) bool { return d.Digest.Validate() != nil || d.Size < 0 })
	name := registry + "/" + repo
	if x.known(ds, name) {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	now := time.Now()
	return x.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, d := range ds {
			var rec Record
			if v := b.Get([]byte(d.Digest)); v == nil || json.Unmarshal(v, &rec) != nil {
				rec = Record{Size: d.Size}
				x.n++
			} else if rec.Size != d.Size {
				rec.Size = -1 // two manifests disagree: one of them lies, and it cannot be told which
			}
			rec.Repositories = append([]string{name}, slices.DeleteFunc(rec.Repositories, func(r string) bool { return r == name })...)
			if len(rec.Repositories) > MaxRepositories {
				rec.Repositories = rec.Repositories[:MaxRepositories]
			}
			rec.Listed = now
			v, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(d.Digest), v); err != nil {
				return err
			}
		}
		if x.n > x.max {
			return x.prune(b)
		}
		return nil
	})
}

// known reports whether every descriptor is recorded with its size for repository name.
func (x *Index) known(ds []oci.Descriptor, name string) bool {
	known := true
	_ = x.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, d := range ds {
			var rec Record
			v := b.Get([]byte(d.Digest))
			if v == nil || json.Unmarshal(v, &rec) != nil || (rec.Size != d.Size && rec.Size >= 0) || !slices.Contains(rec.Repositories, name) {
				known = false
				return nil
			}
		}
		return nil
	})
	return known
}

// prune drops the least recently listed quarter of the records. Called with x.mu held, in an
// update.
func (x *Index) prune(b *bolt.Bucket) error {
	type entry struct {
		k      []byte
		listed time.Time
	}
	var all []entry
	_ = b.ForEach(func(k, v []byte) error {
		var rec Record
		_ = json.Unmarshal(v, &rec)
		all = append(all, entry{append([]byte(nil), k...), rec.Listed})
		return nil
	})
	sort.Slice(all, func(i, j int) bool { return all[i].listed.Before(all[j].listed) })
	drop := len(all) - x.max*3/4
	for _, e := range all[:max(drop, 0)] {
		if err := b.Delete(e.k); err != nil {
			return err
		}
	}
	x.n = len(all) - max(drop, 0)
	return nil
}
