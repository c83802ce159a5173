package store

import (
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/diskio"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

// WithLimit sets the store's size limit (--max-store-size; 0: none): content larger than it is
// refused before a byte of it is written, since it could never be kept.
func WithLimit(n int64) Option { return func(s *Store) { s.limit = n } }

// checkRoom refuses, with errdefs.ErrNoSpace, content of size bytes that cannot fit: larger than
// the store's limit, or than the room left on its file system (besides have, the bytes of it
// already on disk, as a resumed partial file). Concurrent writers are not counted against each
// other: when they overcommit the disk, the one that meets ENOSPC fails and drops its file.
func (s *Store) checkRoom(size, have int64) error {
	if size <= 0 {
		return nil
	}
	if s.limit > 0 && size > s.limit {
		return fmt.Errorf("store: %d bytes is more than the store's limit of %d: %w", size, s.limit, errdefs.ErrNoSpace)
	}
	if free, ok := diskio.Free(s.root); ok && size-have > free {
		return fmt.Errorf("store: %d bytes do not fit in the %d bytes free on %s: %w", size-have, free, s.root, errdefs.ErrNoSpace)
	}
	return nil
}

// makeRoom is checkRoom, but when the file system is what is short, the partial files no fetch
// has open (kept to resume failed fetches) are dropped first: with the disk full they would only
// keep it full.
func (s *Store) makeRoom(size, have int64) error {
	err := s.checkRoom(size, have)
	if err == nil || (s.limit > 0 && size > s.limit) {
		return err
	}
	if freed := s.dropIdlePartials(); freed > 0 {
		s.log.Warn("the disk is short of room: dropped the partial files kept for resumes", "bytes", freed, "need", size-have)
		err = s.checkRoom(size, have)
	}
	return err
}

// dropIdlePartials removes every partial file no writer has open, returning the bytes freed.
func (s *Store) dropIdlePartials() int64 {
	s.partialMu.Lock()
	idle := make([]digest.Digest, 0, len(s.idle))
	for d := range s.idle {
		idle = append(idle, d)
	}
	s.partialMu.Unlock()
	var freed int64
	for _, d := range idle {
		freed += s.DropPartial(d)
	}
	return freed
}

// Limit is the store's size limit (0: none).
func (s *Store) Limit() int64 { return s.limit }
