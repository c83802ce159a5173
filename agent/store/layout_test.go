package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestLayoutNames holds the exported layout, which tools read data directories by, to the names
// the store writes.
func TestLayoutNames(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct{ name, got, want string }{
		{"media", MediaBucket, string(bucketMedia)},
		{"maps", MapsBucket, string(bucketMaps)},
		{"partial", PartialBucket, string(bucketPartial)},
		{"pins", PinsBucket, string(bucketPins)},
	} {
		if c.got != c.want {
			t.Errorf("%s bucket: exported %q, the store writes %q", c.name, c.got, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, MetaFile)); err != nil {
		t.Errorf("no %s after Open: %v", MetaFile, err)
	}
	d := digest.FromString("layout")
	if p, _ := s.path(d); p != BlobPath(dir, d) {
		t.Errorf("BlobPath = %s, the store commits to %s", BlobPath(dir, d), p)
	}
	if p := s.partialPath(d); p != PartialPath(dir, d) {
		t.Errorf("PartialPath = %s, the store writes %s", PartialPath(dir, d), p)
	}
	if s.tmpDir() != dir+"/"+TmpDir || s.blobDir() != dir+"/"+BlobsDir || s.partialDir() != dir+"/"+PartialDir {
		t.Errorf("directories %s %s %s do not match the exported layout", s.tmpDir(), s.blobDir(), s.partialDir())
	}
}
