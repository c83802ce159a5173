package testutil

import (
	"crypto/ed25519"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/shoal-oci/shoal/p2p/seedauth"
)

// seedAuthority is the end-to-end tests' seed authority, one per test process: every node
// StartNode starts trusts it, and every seed signs with it.
var seedAuthority = sync.OnceValues(seedauth.NewKey)

// SeedAuthority returns the tests' seed authority key and its public key's text form (the value
// of --seed-authority).
func SeedAuthority(t testing.TB) (ed25519.PrivateKey, string) {
	t.Helper()
	k, err := seedAuthority()
	if err != nil {
		t.Fatal(err)
	}
	return k, seedauth.FormatPublicKey(k.Public().(ed25519.PublicKey))
}

// seedAuthorityArgs are the flags that make a node trust the tests' seed authority and, for a
// seed, sign with it (in a key file of the test's own), unless extra names the flags itself.
func seedAuthorityArgs(t testing.TB, command string, extra []string) []string {
	t.Helper()
	k, pub := SeedAuthority(t)
	var args []string
	if !slices.Contains(extra, "--seed-authority") {
		args = append(args, "--seed-authority", pub)
	}
	if command == "seed" && !slices.Contains(extra, "--seed-authority-key") {
		path := filepath.Join(t.TempDir(), "seed-authority.key")
		if err := seedauth.WriteKeyFile(path, k); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--seed-authority-key", path)
	}
	return args
}
