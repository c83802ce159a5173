package keys

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

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
