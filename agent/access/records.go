package access

import (
	"encoding/json"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Repository names a repository of an upstream: its host[:port] and path.
type Repository struct {
	Registry string
	Repo     string
}

// Records is the node's own record of which repositories list a digest: the repository whose
// verified manifest is the digest or names it (a layer, a config, an index's child). Access reads
// it to know that content belongs to a private repository (and to which), and to spare the origin
// a membership question. Implementations must be safe for concurrent use.
type Records interface {
	// Listed returns the repositories known to list d (none: the node has no record of d).
	Listed(d digest.Digest) []Repository
	// Record notes that r lists every digest in ds.
	Record(r Repository, ds ...digest.Digest)
}

// MemoryRecords is a Records kept in memory, bounded: at most maxDigests digests (the oldest
// recorded make room) and maxReposPerDigest repositories each. It forgets everything at a
// restart, after which content recorded only here is served as of unknown provenance (see
// docs/private.md); a persistent record replaces it where the store keeps one.
type MemoryRecords struct {
	mu    sync.Mutex
	max   int
	m     map[digest.Digest][]Repository
	order []digest.Digest
}

const maxReposPerDigest = 16

var _ Records = (*MemoryRecords)(nil)

// NewMemoryRecords returns an empty MemoryRecords holding at most maxDigests digests.
func NewMemoryRecords(maxDigests int) *MemoryRecords {
	return &MemoryRecords{max: max(maxDigests, 1), m: make(map[digest.Digest][]Repository)}
}

// Listed implements Records.
func (m *MemoryRecords) Listed(d digest.Digest) []Repository {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Repository(nil), m.m[d]...)
}

// Record implements Records.
func (m *MemoryRecords) Record(r Repository, ds ...digest.Digest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range ds {
		rs, ok := m.m[d]
		if !ok {
			for len(m.m) >= m.max && len(m.order) > 0 {
				delete(m.m, m.order[0])
				m.order = m.order[1:]
			}
			m.order = append(m.order, d)
		}
		if !has(rs, r) && len(rs) < maxReposPerDigest {
			m.m[d] = append(rs, r)
		}
	}
}

func has(rs []Repository, r Repository) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// Children are the digests a manifest or index names: its config, layers and child manifests
// (not a referrer's subject: a manifest in one repository may name another's). A body that is not a manifest names nothing.
func Children(body []byte) []digest.Digest {
	var m struct {
		Config    *struct{ Digest digest.Digest }  `json:"config"`
		Layers    []struct{ Digest digest.Digest } `json:"layers"`
		Manifests []struct{ Digest digest.Digest } `json:"manifests"`
		FSLayers  []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
	}
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	var out []digest.Digest
	add := func(d digest.Digest) {
		if d.Validate() == nil {
			out = append(out, d)
		}
	}
	if m.Config != nil {
		add(m.Config.Digest)
	}
	for _, l := range m.Layers {
		add(l.Digest)
	}
	for _, c := range m.Manifests {
		add(c.Digest)
	}
	for _, l := range m.FSLayers {
		add(l.BlobSum)
	}
	return out
}
