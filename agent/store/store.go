// Package store is a node's content store: committed blobs and manifests, one file per digest,
// blobs still being fetched, and the small metadata beside them in a bbolt database. The data
// directory's layout is named in agent/store/layout; tag records and pins are agent/store/records'.
//
// Content becomes visible only through Writer.Commit, which verifies the digest, fsyncs the file,
// records metadata, renames the file into place and fsyncs the directory. A crash at any moment
// leaves either no file or a whole, verified one.
package store

import (
	_ "crypto/sha512" // registers sha384/sha512 for go-digest
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-oci/shoal/agent/store/layout"
	"github.com/shoal-oci/shoal/agent/store/records"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/diskio"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

var bucketMedia = []byte("media")

// Store is the on-disk content store. It is safe for concurrent use. One process owns a data
// directory at a time: Open fails while another holds it.
type Store struct {
	root  string
	db    *bolt.DB
	log   *slog.Logger
	bytes atomic.Int64
	count atomic.Int64
	// pending is the bytes of content not committed yet: what open writers reserved (the size
	// of a blob of known size, the bytes written of one of unknown size), ingests' bytes, and
	// the partial files no writer has open (idle). They count toward Usage, so GC makes room
	// for them and sees what failed fetches left.
	pending atomic.Int64
	// placeMu orders the check-then-act of Commit and Delete (does the file exist, rename or
	// remove it, count it), so that racing writers of one digest count it once.
	placeMu sync.Mutex
	// chunkSize is the chunk size of the maps built while writing.
	chunkSize int64
	// partialMu guards partialOpen, the digests whose partial file a writer has open: a second
	// writer of the same digest gets a temporary file instead of sharing it.
	partialMu   sync.Mutex
	partialOpen map[digest.Digest]bool
	// idle is the size of each partial file no writer has open (counted in pending), under
	// partialMu.
	idle map[digest.Digest]int64
	// limit is --max-store-size (0: none); content larger than it is refused.
	limit int64
	// ops are the file system calls content is written and read through (tests inject faults).
	ops diskio.Ops
	// maps collapses concurrent computations of one chunk map; mapSlots bounds them.
	maps     singleflight.Group
	mapSlots chan struct{}
	// tags and pins are the records kept beside the content (agent/store/records).
	tags *records.Tags
	pins *records.Pins
}

// Option configures a Store.
type Option func(*Store)

// WithChunkSize sets the chunk size of the maps recorded with content (default chunks.DefaultSize).
func WithChunkSize(n int64) Option { return func(s *Store) { s.chunkSize = n } }

// WithLogger sets the store's logger.
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// Open opens (creating if needed) the store under dir.
func Open(dir string, opts ...Option) (*Store, error) {
	s := &Store{root: dir, log: slog.New(slog.DiscardHandler), chunkSize: chunks.DefaultSize, ops: diskio.OS,
		mapSlots: make(chan struct{}, maxMapComputations)}
	for _, o := range opts {
		o(s)
	}
	if err := chunks.ValidChunkSize(digest.SHA256, s.chunkSize); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	for _, d := range []string{dir, s.blobDir(), s.tmpDir(), s.partialDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	// bbolt's file lock makes this process the directory's only owner; everything that touches
	// files comes after it.
	db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: data directory %s is in use by another process", dir)
		}
		return nil, fmt.Errorf("store: opening metadata: %w", err)
	}
	// Temporary files from a previous run are not resumable (partial/ holds those that are).
	if entries, err := os.ReadDir(s.tmpDir()); err == nil {
		for _, e := range entries {
			_ = os.RemoveAll(filepath.Join(s.tmpDir(), e.Name()))
		}
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMedia, []byte(layout.TagsBucket), bucketPartial, []byte(layout.PinsBucket)} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	s.db, s.tags, s.pins = db, records.NewTags(db), records.NewPins(db, s.holding, s.log)
	if err := s.cleanPartials(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: partial files: %w", err)
	}
	if err := s.scan(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the metadata database. Open files handed out stay valid.
func (s *Store) Close() error { return s.db.Close() }

// Tags are the tag resolutions recorded beside the content.
func (s *Store) Tags() *records.Tags { return s.tags }

// Pins are the pins and holds that keep content from garbage collection (Evict's keep rule).
func (s *Store) Pins() *records.Pins { return s.pins }

// holding is the pins' guard: record runs under the lock Evict takes, with every one of ds
// committed, so content GC takes meanwhile is never pinned.
func (s *Store) holding(ds []digest.Digest, record func() error) error {
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	for _, d := range ds {
		if _, err := s.Stat(d); err != nil {
			return err
		}
	}
	return record()
}

func (s *Store) blobDir() string { return filepath.Join(s.root, "blobs") }
func (s *Store) tmpDir() string  { return filepath.Join(s.root, "tmp") }

// path maps a digest to its file. The digest is validated first, so the result always lies
// inside the data directory.
func (s *Store) path(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: %w", d, errdefs.ErrInvalid)
	}
	return filepath.Join(s.blobDir(), string(d.Algorithm()), d.Encoded()), nil
}

// scan totals the committed content for the usage gauges.
func (s *Store) scan() error {
	var n, c int64
	err := filepath.WalkDir(s.blobDir(), func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		info, err := de.Info()
		if err != nil {
			return nil
		}
		n += info.Size()
		c++
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: scanning %s: %w", s.blobDir(), err)
	}
	s.bytes.Store(n)
	s.count.Store(c)
	return nil
}

// Usage returns the bytes the store holds and the number of committed objects. The bytes are the
// committed content's and those of content being written (see Pending): --max-store-size
// bounds both.
func (s *Store) Usage() (bytes, objects int64) {
	return s.bytes.Load() + s.pending.Load(), s.count.Load()
}

// Pending returns the bytes of content not committed yet: reserved by fetches in flight, written
// by pushes, and held by partial files kept for a resume.
func (s *Store) Pending() int64 { return s.pending.Load() }

// AddPending counts n more bytes (fewer when negative) of content being written outside a
// Writer: a push's ingest adds what it writes and removes it when it ends.
func (s *Store) AddPending(n int64) { s.pending.Add(n) }

// Info describes committed content.
type Info struct {
	Digest digest.Digest
	Size   int64
	// MediaType is set for manifests stored with PutManifest or Commit(mediaType).
	MediaType string
}

// Stat returns the committed content's info, or an error wrapping errdefs.ErrNotFound.
func (s *Store) Stat(d digest.Digest) (Info, error) {
	p, err := s.path(d)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Info{}, fmt.Errorf("%s: %w", d, errdefs.ErrNotFound)
		}
		return Info{}, fmt.Errorf("store: %w", err)
	}
	return Info{Digest: d, Size: fi.Size(), MediaType: s.mediaType(d)}, nil
}

// Open opens committed content for reading. The caller closes the file. A file stays readable
// while open even if the content is deleted meanwhile.
func (s *Store) Open(d digest.Digest) (*os.File, Info, error) {
	p, err := s.path(d)
	if err != nil {
		return nil, Info{}, err
	}
	f, err := s.ops.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, Info{}, fmt.Errorf("%s: %w", d, errdefs.ErrNotFound)
		}
		return nil, Info{}, fmt.Errorf("store: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Info{}, fmt.Errorf("store: %w", err)
	}
	return f, Info{Digest: d, Size: fi.Size(), MediaType: s.mediaType(d)}, nil
}

// ReadManifest returns committed content of at most limit bytes with its media type.
func (s *Store) ReadManifest(d digest.Digest, limit int64) ([]byte, string, error) {
	f, info, err := s.Open(d)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	if info.Size > limit {
		return nil, "", fmt.Errorf("%s is %d bytes: %w", d, info.Size, errdefs.ErrTooLarge)
	}
	if info.MediaType == "" {
		return nil, "", fmt.Errorf("%s has no media type: %w", d, errdefs.ErrNotFound)
	}
	body, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return nil, "", fmt.Errorf("store: %w", err)
	}
	return body, info.MediaType, nil
}

func (s *Store) mediaType(d digest.Digest) string {
	var mt string
	_ = s.db.View(func(tx *bolt.Tx) error {
		mt = string(tx.Bucket(bucketMedia).Get([]byte(d)))
		return nil
	})
	return mt
}

// Delete removes committed content. Readers holding it open keep their copy.
func (s *Store) Delete(d digest.Digest) error {
	p, err := s.path(d)
	if err != nil {
		return err
	}
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	return s.deleteLocked(d, p)
}

// Evict is Delete for garbage collection: it removes d unless keep (nil: none) says it must stay,
// asked again under the lock a pin is recorded under (records.Pins.Put), so that content a pin
// recorded after the collector chose it stays. It reports whether d was removed.
func (s *Store) Evict(d digest.Digest, keep func(digest.Digest) bool) (bool, error) {
	p, err := s.path(d)
	if err != nil {
		return false, err
	}
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	if keep != nil && keep(d) {
		return false, nil
	}
	if err := s.deleteLocked(d, p); err != nil {
		return false, err
	}
	return true, nil
}

// deleteLocked is Delete under placeMu.
func (s *Store) deleteLocked(d digest.Digest, p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", d, errdefs.ErrNotFound)
		}
		return fmt.Errorf("store: %w", err)
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	s.bytes.Add(-fi.Size())
	s.count.Add(-1)
	s.deleteChunkMap(d)
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMedia).Delete([]byte(d)) })
}

// PutManifest verifies and commits a small piece of content held in memory.
func (s *Store) PutManifest(d digest.Digest, mediaType string, body []byte) error {
	if mediaType == "" {
		return fmt.Errorf("manifest %s without media type: %w", d, errdefs.ErrInvalid)
	}
	w, err := s.NewWriter(d, int64(len(body)))
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := w.Write(body); err != nil {
		return err
	}
	return w.Commit(mediaType)
}
