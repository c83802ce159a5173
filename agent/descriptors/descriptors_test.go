package descriptors

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/oci"
)

func manifest(t *testing.T, descs ...oci.Descriptor) []byte {
	t.Helper()
	b, err := json.Marshal(oci.Manifest{MediaType: oci.MediaTypeImageManifest, Config: &descs[0], Layers: descs[1:]})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func desc(s string, size int64) oci.Descriptor {
	return oci.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromString(s), Size: size}
}

func open(t *testing.T, dir string, max int) *Index {
	t.Helper()
	x, err := Open(dir, max)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Close() })
	return x
}

func TestRecordManifest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	x := open(t, dir, 0)
	config, layer := desc("config", 2), desc("layer", 1<<20)
	if err := x.RecordManifest("r.example", "a/b", manifest(t, config, layer)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		d    digest.Digest
		size int64
		ok   bool
	}{
		{"config", config.Digest, 2, true},
		{"layer", layer.Digest, 1 << 20, true},
		{"unlisted", digest.FromString("other"), 0, false},
	} {
		if size, ok := x.Size(tc.d); size != tc.size || ok != tc.ok {
			t.Errorf("%s: Size = %d, %v; want %d, %v", tc.name, size, ok, tc.size, tc.ok)
		}
	}
	// An index lists manifests; another repository listing the same layer adds itself.
	idx, _ := json.Marshal(oci.Manifest{MediaType: oci.MediaTypeImageIndex, Manifests: []oci.Descriptor{desc("child", 500)}})
	if err := x.RecordManifest("r.example", "a/index", idx); err != nil {
		t.Fatal(err)
	}
	if size, ok := x.Size(digest.FromString("child")); !ok || size != 500 {
		t.Errorf("index entry: %d %v", size, ok)
	}
	if err := x.RecordManifest("", "hosted/c", manifest(t, desc("config2", 3), layer)); err != nil {
		t.Fatal(err)
	}
	rec, _ := x.Lookup(layer.Digest)
	if !slices.Equal(rec.Repositories, []string{"/hosted/c", "r.example/a/b"}) {
		t.Errorf("repositories %q", rec.Repositories)
	}
	// Records survive a reopen.
	x.Close()
	x = open(t, dir, 0)
	if size, ok := x.Size(layer.Digest); !ok || size != 1<<20 {
		t.Errorf("after reopening: %d %v", size, ok)
	}
	// Not a manifest: nothing recorded, no error.
	if err := x.RecordManifest("r.example", "a/b", []byte("not json")); err != nil {
		t.Error(err)
	}
}

// Two manifests listing one digest with different sizes: one lies, and which cannot be told, so
// the records decide nothing for it any more (the size must come from the origin or a seed).
func TestConflictingSizesDecideNothing(t *testing.T) {
	t.Parallel()
	x := open(t, t.TempDir(), 0)
	layer := desc("layer", 1<<10)
	if err := x.RecordManifest("r.example", "honest", manifest(t, desc("c1", 2), layer)); err != nil {
		t.Fatal(err)
	}
	forged := layer
	forged.Size = 48 << 20
	if err := x.RecordManifest("r.example", "liar", manifest(t, desc("c2", 2), forged)); err != nil {
		t.Fatal(err)
	}
	if size, ok := x.Size(layer.Digest); ok {
		t.Fatalf("Size = %d after two manifests disagreed", size)
	}
	// The honest manifest served again does not bring the size back.
	if err := x.RecordManifest("r.example", "honest", manifest(t, desc("c1", 2), layer)); err != nil {
		t.Fatal(err)
	}
	if size, ok := x.Size(layer.Digest); ok {
		t.Fatalf("Size = %d after the conflict", size)
	}
	// Negative sizes and malformed digests are not recorded.
	bad := oci.Descriptor{Digest: "sha256:short", Size: 5}
	if err := x.RecordManifest("r.example", "odd", manifest(t, desc("c3", -1), bad)); err != nil {
		t.Fatal(err)
	}
	if _, ok := x.Lookup(digest.FromString("c3")); ok {
		t.Error("a negative size was recorded")
	}
}

// The records and the repositories per record are bounded.
func TestBounds(t *testing.T) {
	t.Parallel()
	const max = 40
	x := open(t, t.TempDir(), max)
	shared := desc("shared", 7)
	for i := range 50 {
		body := manifest(t, desc(fmt.Sprint("config", i), 1), shared)
		if err := x.RecordManifest("r.example", fmt.Sprint("repo", i), body); err != nil {
			t.Fatal(err)
		}
	}
	if x.n > max {
		t.Errorf("%d records kept, bound %d", x.n, max)
	}
	rec, ok := x.Lookup(shared.Digest)
	if !ok || len(rec.Repositories) != MaxRepositories || rec.Repositories[0] != "r.example/repo49" {
		t.Errorf("shared record: %v, %d repositories, first %q", ok, len(rec.Repositories), rec.Repositories[0])
	}
	if _, ok := x.Lookup(digest.FromString("config0")); ok {
		t.Error("the least recently listed record was kept past the bound")
	}
	if _, ok := x.Lookup(digest.FromString("config49")); !ok {
		t.Error("the most recently listed record was pruned")
	}
}
