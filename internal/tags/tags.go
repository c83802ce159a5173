// Package tags holds a tag's resolution record and the key it is stored under, the one
// definition that a node's store, its tag resolution and the peer protocol share: peers read
// each other's records by these keys, so they must never be built in two places.
package tags

import (
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/reference"
)

// Record is a tag's resolution at an origin: the manifest it named, with its media type, and
// when the origin said so.
type Record struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Resolved  time.Time     `json:"resolved"`
}

// Prefix groups the resolutions of one tag of repo at registry: an upstream's host, or "" for
// the hosted namespace (what is pushed to the seeds, whatever name the site gives it). The host
// is folded to reference.CanonicalHost, so that nodes configured with different spellings of one
// registry (upper case, Docker Hub's aliases) store and ask for the same keys.
func Prefix(registry, repo, tag string) string {
	return reference.CanonicalHost(registry) + "/" + repo + ":" + tag + "\x00"
}

// Group is the Prefix of the tag a Key names: its records for every Accept set. It is key
// itself when key is not one of Key's.
func Group(key string) string {
	if i := strings.IndexByte(key, 0); i >= 0 {
		return key[:i+1]
	}
	return key
}

// Bounds on the records a node keeps, so that what clients ask cannot grow them without end.
const (
	// MaxPerTag bounds a tag's records, one per Accept set; the newest are kept. Accept sets are
	// normalized to the manifest types Shoal knows (no known type, or one of the 15 non-empty
	// subsets of four), so every set a client can send has its record, and all of them (about
	// 200 bytes each) fit a peer's 64 KiB tag answer.
	MaxPerTag = 16
	// MaxRecords bounds a node's records of all tags; past it the oldest resolutions go.
	MaxRecords = 65536
	// MaxAge is how long a record is kept after the origin last said so: the longest outage
	// the stale fallback covers.
	MaxAge = 30 * 24 * time.Hour
)

// Key is the record of one resolution: the tag's Prefix plus the client's normalised Accept set,
// since an origin may answer one tag with different manifests for different Accept lists.
func Key(registry, repo, tag string, accept []string) string {
	set := slices.Clone(accept)
	slices.Sort(set)
	return Prefix(registry, repo, tag) + strings.Join(slices.Compact(set), ",")
}
