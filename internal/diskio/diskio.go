// Package diskio is what a node's store needs of its disk beyond the os package: the file system
// calls content is written, synced, renamed and read back through (Ops, which unit tests replace
// to inject the faults real disks have), what a full disk looks like (Full), and the room left
// (Free).
package diskio

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// Ops are the file system calls of a store's writes and reads of whole content.
type Ops struct {
	WriteAt func(f *os.File, p []byte, off int64) (int, error)
	Sync    func(f *os.File) error
	Rename  func(oldpath, newpath string) error
	Open    func(name string) (*os.File, error)
}

// OS is Ops of the os package.
var OS = Ops{WriteAt: (*os.File).WriteAt, Sync: (*os.File).Sync, Rename: os.Rename, Open: os.Open}

// Full reports whether err says the file system is full or over quota (ENOSPC, EDQUOT), or
// already wraps errdefs.ErrNoSpace.
func Full(err error) bool {
	return errors.Is(err, errdefs.ErrNoSpace) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Error wraps an error of a write into the store: "store: " and the cause, with
// errdefs.ErrNoSpace when the disk is full, so that callers drop what they wrote rather than
// keep it for a retry, and clients are told why (nil stays nil).
func Error(err error) error {
	switch {
	case err == nil:
		return nil
	case Full(err) && !errors.Is(err, errdefs.ErrNoSpace):
		return fmt.Errorf("store: %w: %w", errdefs.ErrNoSpace, err)
	}
	return fmt.Errorf("store: %w", err)
}

// Free returns the bytes an unprivileged writer may still use on the file system holding dir;
// ok is false when the file system cannot say.
func Free(dir string) (free int64, ok bool) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return 0, false
	}
	return int64(fs.Bavail) * int64(fs.Bsize), true
}
