package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/diskio"
)

// Dir returns the data directory the store was opened on, for components that keep their own
// files beside the content (a seed's hosted-repository index).
func (s *Store) Dir() string { return s.root }

// ChunkSize is the chunk size of the maps the store records.
func (s *Store) ChunkSize() int64 { return s.chunkSize }

// CreateTemp creates a file under tmp/ for content being written outside a Writer (a push's
// ingest). What is not placed is removed with tmp/ at the next Open; its bytes count toward
// Usage through AddPending.
func (s *Store) CreateTemp(pattern string) (*os.File, error) {
	f, err := os.CreateTemp(s.tmpDir(), pattern)
	if err != nil {
		return nil, diskio.Error(err)
	}
	return f, nil
}

// Place makes f, the verified and synced content d of size bytes, visible: it records the media
// type (for manifests) and the chunk map m (nil: none; only a map whose chain was verified) in
// one transaction, then renames the file into place and syncs the directory. Metadata goes
// first: a crash after it and before the rename leaves a harmless record, never a committed
// manifest without its media type. Content already present is kept and f's file removed; created
// reports which. The caller closes f.
func (s *Store) Place(f *os.File, d digest.Digest, size int64, mediaType string, m *chunks.Map) (created bool, err error) {
	final, err := s.path(d)
	if err != nil {
		return false, err
	}
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	if err := s.recordMeta(d, mediaType, m); err != nil {
		return false, diskio.Error(fmt.Errorf("recording metadata: %w", err))
	}
	if _, err := os.Stat(final); err == nil {
		// Another writer of the same content won: keep its file, drop this one.
		_ = os.Remove(f.Name())
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("store: %w", err)
	}
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, diskio.Error(err)
	}
	if err := s.ops.Rename(f.Name(), final); err != nil {
		return false, diskio.Error(err)
	}
	s.bytes.Add(size)
	s.count.Add(1)
	if err := s.syncDir(dir); err != nil {
		// The content is in place and whole (its file was synced), only its name may not
		// survive a crash: it is committed, and counted.
		s.log.Warn("syncing the blob directory failed", "dir", dir, "err", err)
	}
	return true, nil
}

// recordMeta records d's media type (for manifests; "" records none) and chunk map (nil: none)
// in one transaction. Only a map whose chain was verified may be recorded: built while hashing
// in order, or every chunk verified against it.
func (s *Store) recordMeta(d digest.Digest, mediaType string, m *chunks.Map) error {
	var encodedMap []byte
	if m != nil && m.Digest == d {
		encodedMap, _ = m.MarshalBinary()
	}
	if mediaType == "" && encodedMap == nil {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if mediaType != "" {
			if err := tx.Bucket(bucketMedia).Put([]byte(d), []byte(mediaType)); err != nil {
				return err
			}
		}
		if encodedMap == nil {
			return nil
		}
		bk, err := tx.CreateBucketIfNotExists(bucketMaps)
		if err != nil {
			return err
		}
		return bk.Put([]byte(d), encodedMap)
	})
}

func (s *Store) syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.ops.Sync(f)
}
