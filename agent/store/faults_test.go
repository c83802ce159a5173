package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/diskio"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

// failAfter is a diskio.Ops.WriteAt that writes the first budget bytes, then fails like a full
// disk (a short write and ENOSPC).
func failAfter(budget int64) func(f *os.File, p []byte, off int64) (int, error) {
	var used atomic.Int64
	return func(f *os.File, p []byte, off int64) (int, error) {
		room := budget - used.Load()
		if room >= int64(len(p)) {
			used.Add(int64(len(p)))
			return f.WriteAt(p, off)
		}
		n := 0
		if room > 0 {
			n, _ = f.WriteAt(p[:room], off)
			used.Add(int64(n))
		}
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
}

// A write, fsync or rename that fails leaves nothing committed, nothing behind in tmp/ or
// partial/, and the usage figures as they were; a full disk is reported as errdefs.ErrNoSpace.
// Once the fault is gone the same content commits.
func TestIOErrorsCommitNothing(t *testing.T) {
	t.Parallel()
	data := make([]byte, 300<<10)
	rand.Read(data)
	d := digest.FromBytes(data)
	eio := &os.PathError{Op: "fsync", Path: "x", Err: syscall.EIO}
	for _, tc := range []struct {
		name    string
		fault   func(*diskio.Ops)
		partial bool // a ResumeWriter (a fetch's partial file) rather than a temporary file
		noSpace bool
	}{
		{"write, disk full", func(o *diskio.Ops) { o.WriteAt = failAfter(100 << 10) }, false, true},
		{"write to a partial, disk full", func(o *diskio.Ops) { o.WriteAt = failAfter(100 << 10) }, true, true},
		{"write, EIO", func(o *diskio.Ops) {
			o.WriteAt = func(*os.File, []byte, int64) (int, error) { return 0, eio }
		}, true, false},
		{"fsync", func(o *diskio.Ops) { o.Sync = func(*os.File) error { return eio } }, true, false},
		{"fsync, disk full", func(o *diskio.Ops) {
			o.Sync = func(*os.File) error { return &os.PathError{Op: "fsync", Path: "x", Err: syscall.ENOSPC} }
		}, false, true},
		{"rename", func(o *diskio.Ops) {
			o.Rename = func(string, string) error { return &os.LinkError{Op: "rename", Err: syscall.EIO} }
		}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s, err := Open(dir, WithChunkSize(64<<10))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tc.fault(&s.ops)
			open := s.NewWriter
			if tc.partial {
				open = s.ResumeWriter
			}
			w, err := open(d, int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			_, werr := w.Write(data)
			if werr == nil {
				werr = w.Commit("")
			}
			if werr == nil {
				t.Fatal("the content committed through a failing file system")
			}
			if got := errors.Is(werr, errdefs.ErrNoSpace); got != tc.noSpace {
				t.Errorf("error %v: ErrNoSpace %v, want %v", werr, got, tc.noSpace)
			}
			if err := w.Close(); err != nil {
				t.Logf("close: %v", err)
			}
			if _, err := s.Stat(d); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Stat after the failure = %v, want not found", err)
			}
			if b, n := s.Usage(); b != 0 || n != 0 || s.Pending() != 0 {
				t.Errorf("Usage after the failure = %d bytes, %d objects, %d pending", b, n, s.Pending())
			}
			for _, sub := range []string{"tmp", "partial"} {
				if left := dirEntries(t, filepath.Join(dir, sub)); len(left) != 0 {
					t.Errorf("%s/ holds %v after the failure", sub, left)
				}
			}
			if _, ok := s.Partial(d); ok {
				t.Error("a partial is recorded after the failure")
			}

			// The fault is gone: the same content commits, and is counted once.
			s.ops = diskio.OS
			w, err = open(d, int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(""); err != nil {
				t.Fatal(err)
			}
			f, info, err := s.Open(d)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := make([]byte, info.Size)
			if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("committed content differs (%v)", err)
			}
			if b, n := s.Usage(); b != int64(len(data)) || n != 1 {
				t.Errorf("Usage = %d bytes, %d objects", b, n)
			}
		})
	}
}

// Content that cannot fit is refused before a byte is written: larger than the store's limit,
// or than the file system's free room. Partial files kept for resumes give way first.
func TestNoRoomRefusedUpFront(t *testing.T) {
	t.Parallel()
	s, err := Open(t.TempDir(), WithLimit(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := digest.FromString("too big")
	if _, err := s.NewWriter(d, 2<<20); !errors.Is(err, errdefs.ErrNoSpace) {
		t.Errorf("NewWriter over the limit = %v, want ErrNoSpace", err)
	}
	if _, err := s.ResumeWriter(d, 2<<20); !errors.Is(err, errdefs.ErrNoSpace) {
		t.Errorf("ResumeWriter over the limit = %v, want ErrNoSpace", err)
	}
	// More than any disk here has.
	if _, err := s.ResumeWriter(d, 1<<60); !errors.Is(err, errdefs.ErrNoSpace) {
		t.Errorf("ResumeWriter past the free room = %v, want ErrNoSpace", err)
	}
	if b, n := s.Usage(); b != 0 || n != 0 {
		t.Errorf("Usage = %d bytes, %d objects", b, n)
	}
}

// N concurrent requests for the map of a blob that has none recorded (a small blob; a pushed
// blob named in another algorithm than it was hashed in) cost one read of it, and later ones
// none: the map is computed once and recorded.
func TestChunkMapComputedOnce(t *testing.T) {
	t.Parallel()
	const n = 16
	for _, tc := range []struct {
		name string
		size int
		alg  digest.Algorithm
	}{
		{"small blob", 10 << 10, digest.SHA256},
		{"sha512 blob placed without a map", 300 << 10, digest.SHA512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(t.TempDir(), WithChunkSize(64<<10))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			data := make([]byte, tc.size)
			rand.Read(data)
			d := tc.alg.FromBytes(data)
			f, err := s.CreateTemp("test-*")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Place(f, d, int64(len(data)), "", nil); err != nil {
				t.Fatal(err)
			}
			f.Close()

			var reads atomic.Int64
			first := make(chan struct{})
			var firstOnce sync.Once
			gate := make(chan struct{})
			s.ops.Open = func(name string) (*os.File, error) {
				reads.Add(1)
				firstOnce.Do(func() { close(first) })
				<-gate // the first read waits for the other requests to arrive
				return os.Open(name)
			}
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					m, err := s.ChunkMap(context.Background(), d, 64<<10)
					if err == nil && (m.Digest != d || m.Size != int64(len(data))) {
						err = errors.New("wrong map")
					}
					errs <- err
				}()
			}
			<-first
			close(gate)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			for range n {
				if _, err := s.ChunkMap(context.Background(), d, 64<<10); err != nil {
					t.Fatal(err)
				}
			}
			if got := reads.Load(); got != 1 {
				t.Errorf("%d map requests read the blob %d times, want once", 2*n, got)
			}
		})
	}
}
