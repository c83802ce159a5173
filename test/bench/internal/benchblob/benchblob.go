// Package benchblob writes the random blobs the benchmark programs serve from their origins.
package benchblob

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// Make writes size random (incompressible) bytes into dir/sha256/<hex> and returns the digest.
// Each blob has its own seed, so every blob is distinct content.
func Make(dir string, size int64, seed uint64) (string, error) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(time.Now().UnixNano()))
	rng := rand.NewChaCha8(key)

	if err := os.MkdirAll(filepath.Join(dir, "sha256"), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "gen-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for left := size; left > 0; {
		chunk := buf[:min(int64(len(buf)), left)]
		_, _ = rng.Read(chunk)
		h.Write(chunk)
		if _, err := tmp.Write(chunk); err != nil {
			tmp.Close()
			return "", err
		}
		left -= int64(len(chunk))
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), filepath.Join(dir, "sha256", sum)); err != nil {
		return "", err
	}
	return "sha256:" + sum, nil
}

// MakeN makes n blobs, two at a time (this machine has two cores).
func MakeN(dir string, size int64, n int) ([]string, error) {
	out := make([]string, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 2)
	for i := range n {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			d, err := Make(dir, size, uint64(i)+1)
			if err != nil {
				errs <- fmt.Errorf("blob %d: %w", i, err)
				return
			}
			out[i] = d
			errs <- nil
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return out, first
}
