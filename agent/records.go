package agent

import (
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/access"
	"github.com/shoal-oci/shoal/agent/descriptors"
	"github.com/shoal-oci/shoal/internal/reference"
)

// listings is what access knows of which repositories list a digest: the descriptors the node's
// verified manifests listed (agent/descriptors, kept on disk, so a private image's layers stay
// known as private across a restart), and in memory what the index does not hold (a manifest's
// own digest, membership the origin confirmed).
type listings struct {
	index  *descriptors.Index
	memory *access.MemoryRecords
}

var _ access.Records = listings{}

// maxListedInMemory bounds the digests listings keeps in memory.
const maxListedInMemory = 64 << 10

func newListings(index *descriptors.Index) listings {
	return listings{index: index, memory: access.NewMemoryRecords(maxListedInMemory)}
}

// Listed implements access.Records: both records, registries in their canonical spelling.
func (l listings) Listed(d digest.Digest) []access.Repository {
	out := l.memory.Listed(d)
	if rec, ok := l.index.Lookup(d); ok {
		for _, name := range rec.Repositories {
			host, repo, ok := strings.Cut(name, "/")
			if !ok || host == "" {
				continue // a hosted repository: no origin decides its access
			}
			r := access.Repository{Registry: host, Repo: repo}
			if !contains(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}

// Record implements access.Records. The index records manifests itself, as the resolver
// verifies them; what access learns besides goes to memory.
func (l listings) Record(r access.Repository, ds ...digest.Digest) {
	r.Registry = reference.CanonicalHost(r.Registry)
	l.memory.Record(r, ds...)
}

func contains(rs []access.Repository, r access.Repository) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}
