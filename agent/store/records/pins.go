package records

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/agent/store/layout"
)

var bucketPins = []byte(layout.PinsBucket)

// Guard runs record while every one of ds is committed and none of them can be evicted, or
// returns an error (wrapping errdefs.ErrNotFound for one not committed) without running it.
// The store supplies it: its evictions take the same lock.
type Guard func(ds []digest.Digest, record func() error) error

// Pins are the pins and holds that keep content from garbage collection. Safe for concurrent
// use; one Pins per database, since the index and the holds live in it.
type Pins struct {
	db    *bolt.DB
	guard Guard
	log   *slog.Logger
	// mu guards pinned, the digests kept by pins (how many pins keep each; nil until needed),
	// and held, those kept by work in progress (Hold).
	mu     sync.Mutex
	pinned map[digest.Digest]int
	held   map[digest.Digest]int
}

// NewPins keeps pins in db, whose bucket layout.PinsBucket exists, recording each under guard.
func NewPins(db *bolt.DB, guard Guard, log *slog.Logger) *Pins {
	return &Pins{db: db, guard: guard, log: log}
}

// A pin keeps content from garbage collection. Pins know of a pin only what they need:
// its key, the digests it keeps and when its content was chosen. The rest of the record is its
// owner's (agent/pins: which image, which platforms, how many replicas), kept as the JSON the
// owner wrote, which must carry those two fields as "digests" and "created".
type pinFields struct {
	Digests []digest.Digest `json:"digests"`
	Created time.Time       `json:"created"`
}

// Put records the JSON record rec under key unless a pin of the same key was created later
// (a newer push or preheat of the same reference), reporting whether it did. It is durable when
// Put returns. Every digest the pin names must be committed: a pin never names missing content
// (an error wrapping errdefs.ErrNotFound says which is missing). The check and the record are
// one step under the guard, against the store's evictions, so content GC takes meanwhile is
// never pinned.
func (p *Pins) Put(key string, rec []byte) (bool, error) {
	var f pinFields
	if err := json.Unmarshal(rec, &f); err != nil {
		return false, fmt.Errorf("store: pin record of %q: %w", key, err)
	}
	put := false
	err := p.guard(f.Digests, func() error {
		defer p.changed() // before the guard ends: an eviction after it reads the new index
		return p.db.Update(func(tx *bolt.Tx) error {
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
	})
	if err != nil {
		return false, fmt.Errorf("store: recording pin %q: %w", key, err)
	}
	return put, nil
}

// Delete removes the pin of key, reporting whether there was one.
func (p *Pins) Delete(key string) (bool, error) {
	var found bool
	err := p.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPins)
		found = b.Get([]byte(key)) != nil
		return b.Delete([]byte(key))
	})
	if err != nil {
		return false, fmt.Errorf("store: removing pin: %w", err)
	}
	p.changed()
	return found, nil
}

// All returns every pin record, ordered by key.
func (p *Pins) All() ([][]byte, error) {
	var out [][]byte
	err := p.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPins).ForEach(func(_, v []byte) error {
			out = append(out, append([]byte(nil), v...))
			return nil
		})
	})
	return out, err
}

// Get returns the record of the pin of key.
func (p *Pins) Get(key string) ([]byte, bool) {
	var rec []byte
	_ = p.db.View(func(tx *bolt.Tx) error { // a read that fails finds no pin
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
func (p *Pins) Hold(ds ...digest.Digest) (release func()) {
	p.mu.Lock()
	if p.held == nil {
		p.held = map[digest.Digest]int{}
	}
	for _, d := range ds {
		p.held[d]++
	}
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, d := range ds {
				if p.held[d]--; p.held[d] <= 0 {
					delete(p.held, d)
				}
			}
		})
	}
}

// Pinned reports whether any pin or Hold keeps d. It reads an in-memory index, so GC can ask per
// file.
func (p *Pins) Pinned(d digest.Digest) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held[d] > 0 {
		return true
	}
	if p.pinned == nil {
		p.pinned = map[digest.Digest]int{}
		recs, err := p.All()
		if err != nil {
			p.log.Error("reading pins; GC keeps everything until they can be read", "err", err)
			p.pinned = nil
			return true
		}
		for _, rec := range recs {
			var f pinFields
			if json.Unmarshal(rec, &f) != nil {
				continue // an unreadable record pins nothing; it does not stop the others
			}
			for _, x := range f.Digests {
				p.pinned[x]++
			}
		}
	}
	return p.pinned[d] > 0
}

// changed drops the index; the next Pinned rebuilds it.
func (p *Pins) changed() {
	p.mu.Lock()
	p.pinned = nil
	p.mu.Unlock()
}
