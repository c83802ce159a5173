// Package ingest writes content whose digest is known only once it is complete, as a registry
// push delivers it, into the store: the bytes arrive in order, possibly over several requests,
// and the client names the digest at the end. They are written once to a file under the store's
// tmp/ while the hash of the algorithm chosen at the start runs over them (building the chunk
// map too, for algorithms that have maps), so a push costs one write of its bytes. Commit names
// the content and places it as a fetch's commit does (store.Store.Place).
package ingest

import (
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/diskio"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

// Ingest is one piece of content being pushed. Close always follows; an ingest that is not
// committed leaves nothing behind, and one abandoned by a crash is removed with tmp/ at the next
// store.Open. Its bytes count toward the store's usage while it is open.
//
// An Ingest is not safe for concurrent Writes; Close may race with them.
type Ingest struct {
	s    *store.Store
	alg  digest.Algorithm
	maps *chunks.Builder // nil when alg has no chunk maps
	h    hash.Hash       // when maps is nil

	mu        sync.Mutex
	f         *os.File
	n         int64
	committed bool
	closed    bool
}

// New starts an ingest into s hashed with alg (sha256 when empty). Content named at Commit by a
// digest of another algorithm is still accepted, at the price of reading the file again.
func New(s *store.Store, alg digest.Algorithm) (*Ingest, error) {
	if alg == "" {
		alg = digest.SHA256
	}
	if !alg.Available() {
		return nil, fmt.Errorf("digest algorithm %q: %w", alg, errdefs.ErrInvalid)
	}
	f, err := s.CreateTemp("ingest-" + alg.String() + "-*")
	if err != nil {
		return nil, err
	}
	in := &Ingest{s: s, alg: alg, f: f}
	if b, err := chunks.NewBuilder(alg, s.ChunkSize()); err == nil {
		in.maps = b
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
	if in.maps != nil {
		_, _ = in.maps.Write(p[:n])
	} else {
		in.h.Write(p[:n])
	}
	in.n += int64(n)
	in.s.AddPending(int64(n))
	if err != nil {
		return n, diskio.Error(err)
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
	if err := d.Validate(); err != nil {
		return false, fmt.Errorf("digest %q: %w", d, errdefs.ErrInvalid)
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
		return false, diskio.Error(err)
	}
	// The map was built while hashing these very bytes in order.
	var m *chunks.Map
	if in.maps != nil && d.Algorithm() == in.alg && in.n > in.s.ChunkSize() {
		m = in.maps.Map()
	}
	created, err = in.s.Place(in.f, d, in.n, "", m)
	if err != nil {
		return false, err
	}
	in.committed = true
	in.f.Close()
	in.s.AddPending(-in.n)
	return created, nil
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
	in.s.AddPending(-in.n)
	err := in.f.Close()
	if rerr := os.Remove(in.f.Name()); rerr != nil && err == nil {
		err = rerr
	}
	return err
}
