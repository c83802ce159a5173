package runtimeconf

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces path with data so that a reader, or a crash, sees the old file or
// the new one and never part of either: a temporary file in the same directory, written,
// fsynced, renamed over path, then the directory fsynced so that the rename is durable.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".shoal-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	ok = true
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making the renames and removals in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// Change is one thing configure or remove did, or found it had nothing to do, to one file.
type Change struct {
	Path   string
	Action Action
	Note   string // why, or what else the operator should know
}

// Action is what happened to a file.
type Action string

// What configure and remove do to a file.
const (
	Wrote     Action = "wrote"     // written (the file that was there, if any, saved first)
	Unchanged Action = "unchanged" // already what Shoal would write
	Restored  Action = "restored"  // Shoal's file replaced by the one saved before it
	Removed   Action = "removed"   // Shoal's file deleted: nothing was there before
	Nothing   Action = "nothing"   // nothing of Shoal's to remove
	Warning   Action = "warning"   // written, but something else may undo its effect
)

func (c Change) String() string {
	s := fmt.Sprintf("%-9s %s", c.Action, c.Path)
	if c.Note != "" {
		s += ": " + c.Note
	}
	return s
}
