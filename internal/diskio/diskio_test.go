package diskio

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

func TestError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		full bool
	}{
		{"disk full", &os.PathError{Op: "write", Path: "f", Err: syscall.ENOSPC}, true},
		{"over quota", &os.PathError{Op: "write", Path: "f", Err: syscall.EDQUOT}, true},
		{"already classified", errdefs.ErrNoSpace, true},
		{"I/O error", &os.PathError{Op: "fsync", Path: "f", Err: syscall.EIO}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Error(tc.err)
			if Full(tc.err) != tc.full || errors.Is(got, errdefs.ErrNoSpace) != tc.full {
				t.Errorf("Full = %v, Error = %v; want full %v", Full(tc.err), got, tc.full)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("Error(%v) = %v lost the cause", tc.err, got)
			}
		})
	}
	if Error(nil) != nil {
		t.Error("Error(nil) is not nil")
	}
	if free, ok := Free(t.TempDir()); !ok || free <= 0 {
		t.Errorf("Free = %d, %v", free, ok)
	}
}
