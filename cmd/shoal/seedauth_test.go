package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/p2p/keys"
	"github.com/shoal-oci/shoal/seed"
)

// `shoal seed-authority create` writes a private key only its owner reads and prints the public
// key; the flags that name seeds reach the node's config, and bad values are refused.
func TestSeedAuthority(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "authority.key")
	pub, err := run(t, "seed-authority", "create", "--key", keyFile)
	if err != nil || !strings.HasPrefix(pub, "shoal-seed-authority:") {
		t.Fatalf("create: %q %v", pub, err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if _, err := run(t, "seed-authority", "create", "--key", keyFile); err == nil {
		t.Fatal("create overwrote an existing key")
	}
	if again, err := run(t, "seed-authority", "public", "--key", keyFile); err != nil || again != pub {
		t.Fatalf("public: %q %v, want %q", again, err, pub)
	}
	pubFile := filepath.Join(dir, "authority.pub")
	if err := os.WriteFile(pubFile, []byte(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	id, err := keys.PeerIDFromDataDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	var got seed.Config
	app := newApp()
	for _, c := range app.Commands {
		if c.Name == "seed" {
			c.Action = func(c *cli.Context) error {
				var err error
				got, err = seedConfig(c)
				return err
			}
		}
	}
	t.Setenv("SHOAL_SEED_PEER", id.String())
	if err := app.Run([]string{"shoal", "seed", "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--seed-authority", strings.TrimSpace(pub), "--seed-authority-key", keyFile}); err != nil {
		t.Fatal(err)
	}
	pc := got.Agent.P2P
	if pc == nil || len(pc.SeedAuthorities) != 1 || pc.SeedAuthorityKey == nil || len(pc.SeedPeers) != 1 || pc.SeedPeers[0] != id {
		t.Fatalf("p2p config %+v", pc)
	}
	for _, bad := range [][]string{
		{"--seed-authority", "ssh-ed25519 AAAA"},
		{"--seed-peer", "not-a-peer"},
		{"--seed-authority-key", filepath.Join(dir, "missing")},
		{"--seed-authority-key", pubFile}, // the public key is no private key
	} {
		if err := app.Run(append([]string{"shoal", "seed"}, bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	var agentGot []string
	if err := configOnly(t, &agentGot).Run([]string{"shoal", "agent", "--seed-authority-key", keyFile}); err == nil {
		t.Error("an agent accepted --seed-authority-key")
	}
}
