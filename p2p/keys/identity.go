// Package keys holds a node's keys: its identity (the libp2p key its peer ID derives from, kept in
// the data directory) and the swarm key (the pre-shared key of a private network, which admits a
// node to the cluster).
package keys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// IdentityFile is the name of the node's private key inside its data directory.
const IdentityFile = "identity.key"

// LoadIdentity returns the node's private key from dataDir/identity.key, creating an Ed25519 key there if
// the file is missing. Creation is atomic and race-free: the key is written to a temporary file (mode
// 0600), fsynced, and hard-linked into place, so concurrent callers and crashes never leave a partial key
// and every caller ends up with the same key. The file holds the key in libp2p's protobuf encoding.
func LoadIdentity(dataDir string) (crypto.PrivKey, error) {
	if dataDir == "" {
		return nil, errors.New("identity: no data directory")
	}
	path := filepath.Join(dataDir, IdentityFile)
	if k, err := readIdentity(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	b, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	tmp, err := os.CreateTemp(dataDir, ".identity-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := writeSynced(tmp, b); err != nil {
		return nil, fmt.Errorf("identity: write %s: %w", tmp.Name(), err)
	}
	// Link fails if another process created the key meanwhile; theirs wins and we read it back.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readIdentity(path)
		}
		return nil, fmt.Errorf("identity: %w", err)
	}
	if d, err := os.Open(dataDir); err == nil {
		_ = d.Sync() // make the new name durable; best effort on filesystems that refuse directory fsync
		d.Close()
	}
	return key, nil
}

// PeerIDFromDataDir returns the peer ID that a node using dataDir has, creating the identity if it is
// missing (so the ID printed before the first start is the ID the agent will use).
func PeerIDFromDataDir(dataDir string) (peer.ID, error) {
	k, err := LoadIdentity(dataDir)
	if err != nil {
		return "", err
	}
	return peer.IDFromPrivateKey(k)
}

func readIdentity(path string) (crypto.PrivKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err // keep fs.ErrNotExist visible to LoadIdentity
	}
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("identity %s: not a libp2p private key: %w", path, err)
	}
	return k, nil
}

func writeSynced(f *os.File, b []byte) error {
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
