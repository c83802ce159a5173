package store

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

// Dir returns the data directory the store was opened on, for components that keep their own
// files beside the content (a seed's hosted-repository index).
func (s *Store) Dir() string { return s.root }

// Ingest writes content whose digest is known only once it is complete, as a registry push
// delivers it: the bytes arrive in order, possibly over several requests, and the client names
// the digest at the end. They are written once to a file under tmp/ while the hash of the
// algorithm chosen at the start runs over them (building the chunk map too, for algorithms that
// have maps), so a push costs one write of its bytes. Commit names the content and places it as
// Writer.Commit does. Close always follows; an ingest that is not committed leaves nothing
// behind, and one abandoned by a crash is removed with tmp/ at the next Open.
//
// An Ingest is not safe for concurrent Writes; Close may race with them.
type Ingest struct {
	s    *Store
	alg  digest.Algorithm
	maps *chunks.Builder // nil when alg has no chunk maps
	h    hash.Hash

	mu        sync.Mutex
	f         *os.File
	n         int64
	committed bool
	closed    bool
}

// NewIngest starts an ingest hashed with alg (sha256 when empty). Content named at Commit by a
// digest of another algorithm is still accepted, at the price of reading the file again.
func (s *Store) NewIngest(alg digest.Algorithm) (*Ingest, error) {
	if alg == "" {
		alg = digest.SHA256
	}
	if !alg.Available() {
		return nil, fmt.Errorf("digest algorithm %q: %w", alg, errdefs.ErrInvalid)
	}
	f, err := os.CreateTemp(s.tmpDir(), "ingest-"+alg.String()+"-*")
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	in := &Ingest{s: s, alg: alg, f: f}
	if b, err := chunks.NewBuilder(alg, s.chunkSize); err == nil {
		in.maps, in.h = b, builderHash{b}
	} else {
		in.h = alg.Hash()
	}
	return in, nil
}

// Write appends p to the content.
func (in *Ingest) Write(p []byte) (int, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed || in.committed {
		return 0, fmt.Errorf("store: write to a finished ingest: %w", errdefs.ErrInvalid)
	}
	n, err := in.f.Write(p)
	in.h.Write(p[:n])
	in.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("store: %w", err)
	}
	return n, nil
}

// Size returns the number of bytes written.
func (in *Ingest) Size() int64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.n
}

// Commit verifies that the bytes written hash to d, then makes them durable and visible as d.
// It reports whether the content was new: committing content already present succeeds, stores
// it once, and reports false. A mismatch is an error wrapping errdefs.ErrDigestMismatch and
// leaves the ingest uncommitted (Close removes its file).
func (in *Ingest) Commit(d digest.Digest) (created bool, err error) {
	final, err := in.s.path(d)
	if err != nil {
		return false, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed || in.committed {
		return false, fmt.Errorf("store: commit of a finished ingest: %w", errdefs.ErrInvalid)
	}
	got, err := in.digest(d.Algorithm())
	if err != nil {
		return false, err
	}
	if got != d {
		return false, fmt.Errorf("%s: content hashes to %s: %w", d, got, errdefs.ErrDigestMismatch)
	}
	if err := in.f.Sync(); err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	s := in.s
	s.placeMu.Lock()
	defer s.placeMu.Unlock()
	if _, err := os.Stat(final); err == nil {
		// Another push of the same content won: keep its file, drop ours.
		in.committed = true
		in.f.Close()
		_ = os.Remove(in.f.Name())
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("store: %w", err)
	}
	// The chunk map first, as Writer.Commit does: a crash before the rename leaves a harmless
	// record, and the map was built while hashing these very bytes in order.
	if in.maps != nil && d.Algorithm() == in.alg && in.n > s.chunkSize {
		if b, err := in.maps.Map().MarshalBinary(); err == nil {
			if err := s.db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists(bucketMaps)
				if err != nil {
					return err
				}
				return bk.Put([]byte(d), b)
			}); err != nil {
				return false, fmt.Errorf("store: recording metadata: %w", err)
			}
		}
	}
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	if err := os.Rename(in.f.Name(), final); err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	in.committed = true
	in.f.Close()
	s.bytes.Add(in.n)
	s.count.Add(1)
	return true, nil
}

// digest returns the digest of the bytes written in alg: the running hash's when alg is the one
// chosen at the start, else by reading the file back.
func (in *Ingest) digest(alg digest.Algorithm) (digest.Digest, error) {
	if alg == in.alg {
		if in.maps != nil {
			return in.maps.Digest(), nil
		}
		return digest.NewDigest(alg, in.h), nil
	}
	if !alg.Available() {
		return "", fmt.Errorf("digest algorithm %q: %w", alg, errdefs.ErrInvalid)
	}
	dg := alg.Digester()
	if _, err := io.Copy(dg.Hash(), io.NewSectionReader(in.f, 0, in.n)); err != nil {
		return "", fmt.Errorf("store: reading back: %w", err)
	}
	return dg.Digest(), nil
}

// Close releases the file, removing it unless committed. It is safe to call more than once.
func (in *Ingest) Close() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return nil
	}
	in.closed = true
	if in.committed {
		return nil
	}
	err := in.f.Close()
	if rerr := os.Remove(in.f.Name()); rerr != nil && err == nil {
		err = rerr
	}
	return err
}
