package registryapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
)

// Repository names the repository a request is about: the registry the client named (the
// request's ns parameter, validated as a host[:port]; "" when it named none) and the repository
// path. The server does not decide what a registry name means: the Backend does (an agent maps
// it to one of its upstreams and refuses any other with an error wrapping
// errdefs.ErrNotConfigured, before any I/O). Content is addressed by digest, so Registry
// matters only when content must come from an upstream.
type Repository struct {
	Registry string
	Name     string
}

// Listing is an answer to a listing endpoint (tag list, referrers), relayed to the client as
// it is: any 2xx or 4xx status, with its body and the headers a client needs.
type Listing struct {
	Status      int
	ContentType string
	// Link is the pagination header, with links relative to this server.
	Link string
	// FiltersApplied is the referrers answer's OCI-Filters-Applied header ("artifactType" when
	// the list was filtered).
	FiltersApplied string
	Body           []byte
}

// Blob is an open blob, possibly still arriving. The server calls Close exactly once.
type Blob interface {
	// Size is the blob's length in bytes, or -1 while it is unknown (an origin that sent no
	// Content-Length).
	Size() int64
	// Source says where the bytes come from, for metrics and logs ("cache", "partial", "peer",
	// "origin", "hosted", "memory").
	Source() string
	// CopyRange writes bytes [off, off+n) to w in order, waiting for bytes still being fetched;
	// n < 0 means to the end. It returns the number of bytes written. An error after bytes were
	// written means the response must be aborted: the blob failed verification or its fetch failed.
	CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error)
	Close() error
}

// BlobProvider opens blobs. Errors wrap errdefs classes: ErrNotFound when neither the store nor
// the origin has the blob.
type BlobProvider interface {
	OpenBlob(ctx context.Context, r Repository, dgst digest.Digest) (Blob, error)
	// StatBlob returns the blob's size without fetching it.
	StatBlob(ctx context.Context, r Repository, dgst digest.Digest) (int64, error)
}

// Manifest is a manifest or index with the media type it was served with.
type Manifest struct {
	MediaType string
	Digest    digest.Digest
	Body      []byte
	// Source says where the manifest came from, for metrics and logs ("cache", "peer", "origin",
	// "hosted", "memory").
	Source string
}

// ManifestProvider resolves tags and returns manifests. ref is a tag or a digest; accept is the
// client's list of acceptable media types (empty means anything).
type ManifestProvider interface {
	GetManifest(ctx context.Context, r Repository, ref string, accept []string) (*Manifest, error)
}

// Lister answers the listing endpoints, which a mirror passes through to the origin.
type Lister interface {
	Tags(ctx context.Context, r Repository, n int, last string) (*Listing, error)
	Referrers(ctx context.Context, r Repository, dgst digest.Digest, artifactType string) (*Listing, error)
}

// Challenger is implemented by a Backend whose base endpoint (/v2/) must ask anonymous clients
// for credentials: BaseChallenge returns the WWW-Authenticate header for the registry a client
// names ("" to answer 200). Clients such as skopeo and podman send credentials only to a
// registry whose base endpoint challenged them.
type Challenger interface {
	BaseChallenge(ctx context.Context, registry string) string
}

// Backend is everything the pull API needs. The agent implements it.
type Backend interface {
	BlobProvider
	ManifestProvider
	Lister
}

// TagList is a tag listing answer (distribution-spec "Listing Tags") for repo: tags in order,
// with link as the Link header of the next page ("" on the last page).
func TagList(repo string, tags []string, link string) (*Listing, error) {
	body, err := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{repo, tags})
	if err != nil {
		return nil, err
	}
	return &Listing{Status: http.StatusOK, ContentType: "application/json", Link: link, Body: body}, nil
}
