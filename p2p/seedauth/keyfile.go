package seedauth

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

var errKeyFile = errors.New("not a seed authority key file")

// privateKeyPrefix starts the key line of an authority's private key file.
const privateKeyPrefix = "shoal-seed-authority-key:"

// NewKey generates an authority key pair.
func NewKey() (ed25519.PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("seed authority key: %w", err)
	}
	return k, nil
}

// MarshalKey is the content of a private key file: a comment and one key line.
func MarshalKey(k ed25519.PrivateKey) []byte {
	return fmt.Appendf(nil, "# Shoal seed authority private key: whoever holds it can make any node a seed. Keep it secret.\n# Public key: %s\n%s%s\n",
		FormatPublicKey(k.Public().(ed25519.PublicKey)), privateKeyPrefix, base64.RawURLEncoding.EncodeToString(k.Seed()))
}

// ParseKey reads MarshalKey's form; comment lines and blank lines are skipped.
func ParseKey(b []byte) (ed25519.PrivateKey, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		enc, ok := strings.CutPrefix(line, privateKeyPrefix)
		if !ok {
			break
		}
		seed, err := base64.RawURLEncoding.DecodeString(enc)
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("%w: the key line is not a %d-byte Ed25519 seed: %w", errKeyFile, ed25519.SeedSize, errdefs.ErrInvalid)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	return nil, fmt.Errorf("%w: no %s line: %w", errKeyFile, privateKeyPrefix, errdefs.ErrInvalid)
}

// WriteKeyFile writes a new private key file, readable by its owner only; it never overwrites
// a file, since a lost authority key means re-authorizing every seed.
func WriteKeyFile(path string, k ed25519.PrivateKey) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("seed authority key: %w", err)
	}
	if _, err := f.Write(MarshalKey(k)); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("seed authority key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("seed authority key: %w", err)
	}
	return f.Close()
}

// ReadKeyFile reads a private key file written by WriteKeyFile.
func ReadKeyFile(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seed authority key: %w", err)
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
