package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store/layout"
)

// TestLayoutNames holds the layout, which tools read data directories by, to the names the store
// writes (agent/store/records names its buckets by the layout itself).
func TestLayoutNames(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct{ name, got, want string }{
		{"media", layout.MediaBucket, string(bucketMedia)},
		{"maps", layout.MapsBucket, string(bucketMaps)},
		{"partial", layout.PartialBucket, string(bucketPartial)},
	} {
		if c.got != c.want {
			t.Errorf("%s bucket: exported %q, the store writes %q", c.name, c.got, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, layout.MetaFile)); err != nil {
		t.Errorf("no %s after Open: %v", layout.MetaFile, err)
	}
	d := digest.FromString("layout")
	if p, _ := s.path(d); p != layout.BlobPath(dir, d) {
		t.Errorf("layout.BlobPath = %s, the store commits to %s", layout.BlobPath(dir, d), p)
	}
	if p := s.partialPath(d); p != layout.PartialPath(dir, d) {
		t.Errorf("layout.PartialPath = %s, the store writes %s", layout.PartialPath(dir, d), p)
	}
	if s.tmpDir() != dir+"/"+layout.TmpDir || s.blobDir() != dir+"/"+layout.BlobsDir || s.partialDir() != dir+"/"+layout.PartialDir {
		t.Errorf("directories %s %s %s do not match the exported layout", s.tmpDir(), s.blobDir(), s.partialDir())
	}
}
