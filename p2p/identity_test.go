package p2p

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestIdentityPersistsAcrossNodes(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data") // created by New
	first := newTestNode(t, Config{DataDir: dir})
	id := first.ID()
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, IdentityFile))
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
	if got, err := PeerIDFromDataDir(dir); err != nil || got != id {
		t.Errorf("PeerIDFromDataDir = %s, %v; want %s", got, err, id)
	}
	if other := newTestNode(t, Config{}); other.ID() == id {
		t.Error("a node with another data directory has the same ID")
	}
}

func TestLoadIdentityConcurrentCreate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const callers = 8
	ids := make([]peer.ID, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			id, err := PeerIDFromDataDir(dir)
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Fatalf("concurrent creators got different identities: %v", ids)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("data directory holds %d files, want only %s (temporary files must go)", len(entries), IdentityFile)
	}
}

func TestLoadIdentityRejectsGarbage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentity(dir); err == nil {
		t.Fatal("LoadIdentity accepted a corrupt key file (and must not replace it)")
	}
	if _, err := LoadIdentity(""); err == nil {
		t.Fatal("LoadIdentity accepted an empty data directory")
	}
}
