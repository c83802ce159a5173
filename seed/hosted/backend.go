package hosted

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/registryapi"
)

// lookupBlob reports whether repo is hosted and whether it holds d.
func (r *Registry) lookupBlob(repo string, d digest.Digest) (hosted, held bool) {
	_ = r.db.View(func(tx *bolt.Tx) error {
		hosted = hostedRepo(tx, repo)
		held = hosted && holds(tx, repo, d)
		return nil
	})
	return hosted, held
}

// Hosts reports whether repo is a hosted repository: something was pushed to it.
func (r *Registry) Hosts(repo string) bool {
	found := false
	_ = r.db.View(func(tx *bolt.Tx) error {
		found = hostedRepo(tx, repo)
		return nil
	})
	return found
}

// OpenBlob opens blob d of a hosted repository.
func (r *Registry) OpenBlob(ctx context.Context, t registryapi.Repository, d digest.Digest) (registryapi.Blob, error) {
	if _, held := r.lookupBlob(t.Name, d); !held {
		return nil, fmt.Errorf("blob %s in %s: %w", d, t.Name, errdefs.ErrNotFound)
	}
	return r.st.OpenBlob(d, "hosted")
}

// StatBlob returns the size of blob d of a hosted repository.
func (r *Registry) StatBlob(ctx context.Context, t registryapi.Repository, d digest.Digest) (int64, error) {
	if _, held := r.lookupBlob(t.Name, d); !held {
		return 0, fmt.Errorf("blob %s in %s: %w", d, t.Name, errdefs.ErrNotFound)
	}
	info, err := r.st.Stat(d)
	if err != nil {
		return 0, err
	}
	return info.Size, nil
}

// GetManifest returns a manifest of a hosted repository by tag or digest, with the media type it
// was pushed with (accept is not consulted: a pushed manifest has one form).
func (r *Registry) GetManifest(ctx context.Context, t registryapi.Repository, ref string, accept []string) (*registryapi.Manifest, error) {
	var (
		hosted, found bool
		d             digest.Digest
		mt            string
	)
	_ = r.db.View(func(tx *bolt.Tx) error {
		if hosted = hostedRepo(tx, t.Name); !hosted {
			return nil
		}
		if strings.Contains(ref, ":") {
			d = digest.Digest(ref)
			var rec manifestRecord
			rec, found = getJSON[manifestRecord](tx.Bucket(bucketManifests), key(t.Name, ref))
			mt = rec.MediaType
			return nil
		}
		var tr tagRecord
		tr, found = getJSON[tagRecord](tx.Bucket(bucketTags), key(t.Name, ref))
		d, mt = tr.Digest, tr.MediaType
		return nil
	})
	if !hosted || !found {
		return nil, fmt.Errorf("manifest %s:%s: %w", t.Name, ref, errdefs.ErrNotFound)
	}
	f, info, err := r.st.Open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info.Size > oci.MaxManifestSize {
		return nil, fmt.Errorf("manifest %s is %d bytes: %w", d, info.Size, errdefs.ErrTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(f, oci.MaxManifestSize))
	if err != nil {
		return nil, fmt.Errorf("hosted: reading manifest %s: %w", d, err)
	}
	return &registryapi.Manifest{MediaType: mt, Digest: d, Body: body, Source: "hosted"}, nil
}

// maxTagsPage bounds a tag list answer: a client asking for everything gets pages of this size
// with Link headers, which the spec allows.
const maxTagsPage = 10000

// Tags lists a hosted repository's tags in order, after last, at most n when n > 0 (and never
// more than maxTagsPage), with a Link to the next page when there is one.
func (r *Registry) Tags(ctx context.Context, t registryapi.Repository, n int, last string) (*registryapi.Listing, error) {
	if n <= 0 || n > maxTagsPage {
		n = maxTagsPage
	}
	var (
		hosted bool
		tags   = []string{}
		more   bool
	)
	_ = r.db.View(func(tx *bolt.Tx) error {
		if hosted = hostedRepo(tx, t.Name); !hosted {
			return nil
		}
		p := prefix(t.Name)
		c := tx.Bucket(bucketTags).Cursor()
		start := p
		if last != "" {
			start = key(t.Name, last)
		}
		for k, _ := c.Seek(start); k != nil && strings.HasPrefix(string(k), string(p)); k, _ = c.Next() {
			tag := string(k[len(p):])
			if tag == last {
				continue
			}
			if len(tags) == n {
				more = true
				break
			}
			tags = append(tags, tag)
		}
		return nil
	})
	if !hosted {
		return nil, fmt.Errorf("repository %s: %w", t.Name, errdefs.ErrNotFound)
	}
	var link string
	if more {
		q := url.Values{"n": {strconv.Itoa(n)}, "last": {tags[len(tags)-1]}}
		link = fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, t.Name, q.Encode())
	}
	return registryapi.TagList(t.Name, tags, link)
}

// Referrers lists the manifests of a hosted repository whose subject is d, those of the given
// artifactType when it is not "", as an OCI image index. Without a fallback,
// a repository that is not hosted has an empty list.
func (r *Registry) Referrers(ctx context.Context, t registryapi.Repository, d digest.Digest, artifactType string) (*registryapi.Listing, error) {
	var hosted bool
	list := []oci.Descriptor{}
	_ = r.db.View(func(tx *bolt.Tx) error {
		if hosted = hostedRepo(tx, t.Name); !hosted {
			return nil
		}
		scan(tx.Bucket(bucketReferrers), prefix(t.Name, d.String()), func(_, v []byte) bool {
			var desc oci.Descriptor
			if json.Unmarshal(v, &desc) == nil && (artifactType == "" || desc.ArtifactType == artifactType) {
				list = append(list, desc)
			}
			return true
		})
		return nil
	})
	// A repository not hosted here has nothing referring to d: the spec's answer is an empty
	// list, not an error.
	body, err := json.Marshal(oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex, Manifests: list})
	if err != nil {
		return nil, err
	}
	p := &registryapi.Listing{Status: http.StatusOK, ContentType: oci.MediaTypeImageIndex, Body: body}
	if artifactType != "" {
		p.FiltersApplied = "artifactType"
	}
	return p, nil
}
