package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A blob past the parallel threshold comes from the origin as several range requests at once,
// lands whole, and is verified in order: a corrupted range fails the digest and nothing is kept.
func TestLargeBlobByParallelRanges(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 70<<20+12345)
	pushBlob(t, o, "test/big", data, d)
	dir := t.TempDir()
	n := startAgent(t, dir, o.URL())

	o.Corrupt(d.String(), true)
	o.ResetCounts()
	if body, err := getBlob(t, n.host, "test/big", d); err == nil && bytes.Equal(body, data) {
		t.Fatal("corrupted ranges were served whole")
	}
	path := filepath.Join(dir, "blobs", "sha256", d.Encoded())
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("corrupted blob stored: %v", err)
	}
	if gets := o.BlobGets(d.String()); gets < 2 {
		t.Fatalf("origin saw %d GETs of the blob; want parallel ranges", gets)
	}

	o.Corrupt(d.String(), false)
	o.ResetCounts()
	body, err := getBlob(t, n.host, "test/big", d)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("pull: %v", err)
	}
	// One stream for the first 16 MiB segment, the probe for the second, one range per other.
	if gets := o.BlobGets(d.String()); gets != 5 {
		t.Fatalf("origin saw %d GETs of the blob, want 5 (one per 16 MiB segment)", gets)
	}
	// The first stream is closed after its segment: what it had in flight is not used.
	got := o.BytesServed()
	t.Logf("origin sent %d bytes for a %d-byte blob (%.1f MiB over)", got, len(data), float64(got-int64(len(data)))/(1<<20))
	if got < int64(len(data)) || got > int64(len(data))+16<<20 {
		t.Fatalf("origin sent %d bytes for a %d-byte blob", got, len(data))
	}
	waitFor(t, func() bool { _, err := os.Stat(path); return err == nil }, "commit")
	if stored, _ := os.ReadFile(path); !bytes.Equal(stored, data) {
		t.Fatal("stored content differs")
	}
}
