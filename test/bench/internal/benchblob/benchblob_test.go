package benchblob

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Blobs are stored under their own digest, and distinct seeds give distinct content.
func TestMakeN(t *testing.T) {
	dir := t.TempDir()
	ds, err := MakeN(dir, 5<<20+3, 3)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range ds {
		b, err := os.ReadFile(filepath.Join(dir, "sha256", strings.TrimPrefix(d, "sha256:")))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if "sha256:"+hex.EncodeToString(sum[:]) != d || len(b) != 5<<20+3 {
			t.Fatalf("%s: %d bytes hashing elsewhere", d, len(b))
		}
		seen[d] = true
	}
	if len(seen) != 3 {
		t.Fatalf("%d distinct blobs of 3", len(seen))
	}
}
