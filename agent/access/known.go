package access

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// known is the set of repositories found private, with their challenges, kept in a file so that
// a node restarted while the origin is down still knows which of its content is private. Only
// private repositories are kept: a repository never probed is served as public during an outage,
// as it was before this node knew of privacy. It holds at most max entries.
type known struct {
	mu   sync.Mutex
	path string // "" keeps it in memory only
	max  int
	m    map[string]string // host/repo → challenge
}

func loadKnown(path string, max int) (*known, error) {
	k := &known{path: path, max: max, m: map[string]string{}}
	if path == "" {
		return k, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("private repositories: %w", err)
	}
	if err := json.Unmarshal(b, &k.m); err != nil {
		return nil, fmt.Errorf("private repositories in %s: %w", path, err)
	}
	return k, nil
}

func (k *known) get(key string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ch, ok := k.m[key]
	return ch, ok
}

// set records whether key is private, writing the file when that changes.
func (k *known) set(key string, private bool, challenge string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	old, was := k.m[key]
	switch {
	case private && was && old == challenge, !private && !was:
		return nil
	case private:
		if !was && len(k.m) >= k.max {
			return fmt.Errorf("private repositories: %d already recorded", k.max)
		}
		k.m[key] = challenge
	default:
		delete(k.m, key)
	}
	return k.save()
}

// save writes the set: to a temporary file, synced, then renamed over the old one.
func (k *known) save() error {
	if k.path == "" {
		return nil
	}
	b, err := json.Marshal(k.m)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.path), ".private-repos-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), k.path)
}

// anyOf returns the challenge of a repository of registry host recorded private, if any.
func (k *known) anyOf(host string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	prefix := host + "/"
	for key, ch := range k.m {
		if strings.HasPrefix(key, prefix) {
			return ch, true
		}
	}
	return "", false
}
