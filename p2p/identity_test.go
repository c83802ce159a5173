package p2p

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shoal-oci/shoal/p2p/keys"
)

func TestIdentityPersistsAcrossNodes(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data") // created by New
	first := newTestNode(t, Config{DataDir: dir})
	id := first.ID()
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, keys.IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("identity file mode %v, want 0600", mode)
	}
	second := newTestNode(t, Config{DataDir: dir})
	if second.ID() != id {
		t.Errorf("restarted node has ID %s, want %s", second.ID(), id)
	}
	if got, err := keys.PeerIDFromDataDir(dir); err != nil || got != id {
		t.Errorf("PeerIDFromDataDir = %s, %v; want %s", got, err, id)
	}
	if other := newTestNode(t, Config{}); other.ID() == id {
		t.Error("a node with another data directory has the same ID")
	}
}
