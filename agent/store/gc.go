package store

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
)

// touchInterval limits how often a read updates a file's access mark: an LRU needs minutes,
// not every request.
const touchInterval = time.Minute

// Touch marks committed content as recently used, for the LRU. The file's modification time is
// the mark: content is never modified, so the time is free for this, and it survives restarts
// without a metadata write per read.
func (s *Store) Touch(d digest.Digest) {
	p, err := s.path(d)
	if err != nil {
		return
	}
	fi, err := os.Stat(p)
	if err != nil || time.Since(fi.ModTime()) < touchInterval {
		return
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now)
}

// Entry is a piece of content garbage collection may remove: committed content, used when last
// touched, or a partial file no fetch has open, used when last written (a failed fetch's
// leftovers count toward the store's usage like any content).
type Entry struct {
	Digest  digest.Digest
	Size    int64
	Used    time.Time
	Partial bool
}

// Entries lists what garbage collection may remove (with Delete, or DropPartial for a partial).
func (s *Store) Entries(ctx context.Context) ([]Entry, error) {
	var out []Entry
	err := filepath.WalkDir(s.blobDir(), func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if de.IsDir() {
			return ctx.Err()
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(filepath.Base(filepath.Dir(p))), de.Name())
		if info, err := de.Info(); err == nil && d.Validate() == nil {
			out = append(out, Entry{Digest: d, Size: info.Size(), Used: info.ModTime()})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.partialMu.Lock()
	defer s.partialMu.Unlock()
	for d, size := range s.idle {
		if info, err := os.Stat(s.partialPath(d)); err == nil {
			out = append(out, Entry{Digest: d, Size: size, Used: info.ModTime(), Partial: true})
		}
	}
	return out, nil
}
