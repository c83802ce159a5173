package benchproc

import (
	"crypto/ed25519"
	"path/filepath"

	"github.com/shoal-oci/shoal/p2p/seedauth"
)

// SeedAuthority is a benchmark's seed authority: seeds sign with KeyFile
// (--seed-authority-key), and every node trusts Public (--seed-authority), as an operator
// configures a cluster with seeds.
type SeedAuthority struct {
	Public  string
	KeyFile string
}

// NewSeedAuthority creates a seed authority whose key file is in dir.
func NewSeedAuthority(dir string) (SeedAuthority, error) {
	k, err := seedauth.NewKey()
	if err != nil {
		return SeedAuthority{}, err
	}
	path := filepath.Join(dir, "seed-authority.key")
	if err := seedauth.WriteKeyFile(path, k); err != nil {
		return SeedAuthority{}, err
	}
	return SeedAuthority{Public: seedauth.FormatPublicKey(k.Public().(ed25519.PublicKey)), KeyFile: path}, nil
}

// Args are the flags of a node of the cluster: a seed's (seed true) sign with the key, and
// every node trusts it.
func (a SeedAuthority) Args(seed bool) []string {
	args := []string{"--seed-authority", a.Public}
	if seed {
		args = append(args, "--seed-authority-key", a.KeyFile)
	}
	return args
}
