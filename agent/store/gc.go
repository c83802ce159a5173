package store

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
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

// Policy says what GC removes and whom it tells.
type Policy struct {
	// High and Low are the watermarks: GC runs while usage exceeds High, until it is at most Low.
	High, Low int64
	// Keep reports content that must stay (pinned, hosted); nil keeps nothing.
	Keep func(digest.Digest) bool
	// Evicted is told each digest removed (to stop advertising it); nil tells no one.
	Evicted func(digest.Digest)
}

// GC removes the least recently used content while usage exceeds p.High, until it is at most
// p.Low. Partial files no fetch has open are content too, used when last written: a failed
// fetch's leftovers go like any other. Readers holding removed content open keep reading it. It
// returns the bytes freed.
func (s *Store) GC(ctx context.Context, p Policy) (int64, error) {
	high, low, keep := p.High, p.Low, p.Keep
	if used, _ := s.Usage(); high <= 0 || used <= high {
		return 0, nil
	}
	type entry struct {
		d       digest.Digest
		size    int64
		used    time.Time
		partial bool
	}
	var entries []entry
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
		alg := filepath.Base(filepath.Dir(p))
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), de.Name())
		if d.Validate() != nil {
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return nil
		}
		entries = append(entries, entry{d: d, size: info.Size(), used: info.ModTime()})
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.partialMu.Lock()
	for d, size := range s.idle {
		if info, err := os.Stat(s.partialPath(d)); err == nil {
			entries = append(entries, entry{d: d, size: size, used: info.ModTime(), partial: true})
		}
	}
	s.partialMu.Unlock()
	sort.Slice(entries, func(i, j int) bool { return entries[i].used.Before(entries[j].used) })
	var freed int64
	for _, e := range entries {
		if used, _ := s.Usage(); used <= low {
			break
		}
		if err := ctx.Err(); err != nil {
			return freed, err
		}
		if e.partial {
			if n := s.DropPartial(e.d); n > 0 {
				freed += n
				s.log.Debug("evicted a partial blob", "digest", e.d, "bytes", n, "last_used", e.used)
			}
			continue
		}
		if keep != nil && keep(e.d) {
			continue
		}
		if err := s.Delete(e.d); err != nil {
			s.log.Warn("evicting failed", "digest", e.d, "err", err)
			continue
		}
		if p.Evicted != nil {
			p.Evicted(e.d)
		}
		freed += e.size
		s.log.Debug("evicted", "digest", e.d, "bytes", e.size, "last_used", e.used)
	}
	return freed, nil
}
