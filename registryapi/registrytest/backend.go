// Package registrytest holds what tests of /v2 servers and their clients share, as net/http/httptest
// does for HTTP: an in-memory registryapi.Backend to serve from.
package registrytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/registryapi"
)

// Backend is a registryapi.Backend holding blobs and manifests in maps, for tests of the
// handlers and of clients against them. Content is shared by all repositories and registries, since it is
// addressed by digest; tags belong to a repository. It is safe for concurrent use.
type Backend struct {
	mu        sync.RWMutex
	blobs     map[digest.Digest][]byte
	manifests map[digest.Digest]registryapi.Manifest
	tags      map[string]map[string]digest.Digest // repo → tag → digest
}

var _ registryapi.Backend = (*Backend)(nil)

// NewBackend returns an empty Backend.
func NewBackend() *Backend {
	return &Backend{
		blobs:     map[digest.Digest][]byte{},
		manifests: map[digest.Digest]registryapi.Manifest{},
		tags:      map[string]map[string]digest.Digest{},
	}
}

// PutBlob stores b under its sha256 digest and returns the digest.
func (m *Backend) PutBlob(b []byte) digest.Digest {
	d := digest.FromBytes(b)
	m.PutBlobAs(d, b)
	return d
}

// PutBlobAs stores b under d without checking that b hashes to d, so that tests can use other
// algorithms or content that does not match its digest.
func (m *Backend) PutBlobAs(d digest.Digest, b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobs[d] = slices.Clone(b)
}

// PutManifest stores a manifest with its media type and, when tag is not empty, tags it in repo.
// It returns the manifest's sha256 digest.
func (m *Backend) PutManifest(repo, tag, mediaType string, body []byte) digest.Digest {
	d := digest.FromBytes(body)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.manifests[d] = registryapi.Manifest{MediaType: mediaType, Digest: d, Body: slices.Clone(body), Source: "memory"}
	if tag != "" {
		if m.tags[repo] == nil {
			m.tags[repo] = map[string]digest.Digest{}
		}
		m.tags[repo][tag] = d
	}
	return d
}

// OpenBlob returns the blob or an error wrapping errdefs.ErrNotFound.
func (m *Backend) OpenBlob(_ context.Context, _ registryapi.Repository, d digest.Digest) (registryapi.Blob, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	b, ok := m.blobs[d]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return Blob(b), nil
}

// StatBlob returns the blob's size or an error wrapping errdefs.ErrNotFound.
func (m *Backend) StatBlob(_ context.Context, _ registryapi.Repository, d digest.Digest) (int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	b, ok := m.blobs[d]
	if !ok {
		return 0, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return int64(len(b)), nil
}

// GetManifest resolves ref, a tag of t.Name or a digest; accept is ignored.
func (m *Backend) GetManifest(_ context.Context, t registryapi.Repository, ref string, _ []string) (*registryapi.Manifest, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	d := digest.Digest(ref)
	if tagged, ok := m.tags[t.Name][ref]; ok {
		d = tagged
	}
	mf, ok := m.manifests[d]
	if !ok {
		return nil, fmt.Errorf("manifest %s:%s: %w", t.Name, ref, errdefs.ErrNotFound)
	}
	mf.Body = slices.Clone(mf.Body)
	return &mf, nil
}

// Tags lists t.Name's tags in order, after last and at most n of them when n > 0, as a
// registry would. A repository without tags is not found.
func (m *Backend) Tags(_ context.Context, t registryapi.Repository, n int, last string) (*registryapi.Listing, error) {
	m.mu.RLock()
	var tags []string
	for tag := range m.tags[t.Name] {
		if tag > last {
			tags = append(tags, tag)
		}
	}
	m.mu.RUnlock()
	if len(tags) == 0 && last == "" {
		return nil, fmt.Errorf("repository %s: %w", t.Name, errdefs.ErrNotFound)
	}
	slices.Sort(tags)
	var link string
	if n > 0 && len(tags) > n {
		tags = tags[:n]
		link = fmt.Sprintf(`</v2/%s/tags/list?last=%s&n=%d>; rel="next"`, t.Name, tags[n-1], n)
	}
	return registryapi.TagList(t.Name, tags, link)
}

// Referrers answers with an empty image index: the backend keeps no referrers.
func (m *Backend) Referrers(context.Context, registryapi.Repository, digest.Digest, string) (*registryapi.Listing, error) {
	body, err := json.Marshal(oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex, Manifests: []oci.Descriptor{}})
	if err != nil {
		return nil, err
	}
	return &registryapi.Listing{Status: http.StatusOK, ContentType: oci.MediaTypeImageIndex, Body: body}, nil
}

// Blob is a whole blob in memory, a registryapi.Blob.
type Blob []byte

var _ registryapi.Blob = Blob(nil)

// Size is the blob's length.
func (b Blob) Size() int64 { return int64(len(b)) }

// Source is "memory".
func (b Blob) Source() string { return "memory" }

// Close does nothing.
func (b Blob) Close() error { return nil }

// CopyRange writes n bytes from off to w, or up to the end when n is negative.
func (b Blob) CopyRange(_ context.Context, w io.Writer, off, n int64) (int64, error) {
	if off < 0 || off > int64(len(b)) {
		return 0, fmt.Errorf("offset %d of %d bytes: %w", off, len(b), errdefs.ErrInvalid)
	}
	end := int64(len(b))
	if n >= 0 && off+n < end {
		end = off + n
	}
	written, err := w.Write(b[off:end])
	return int64(written), err
}
