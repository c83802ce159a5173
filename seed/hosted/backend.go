package hosted

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

const mediaTypeIndex = "application/vnd.oci.image.index.v1+json"

// delegate returns the Backend for content of a repository that is not hosted: the fallback,
// when there is one (the agent: its upstream, or with none the cluster, where other seeds'
// pushed images are); nil otherwise.
func (r *Registry) delegate(registryapi.Target) registryapi.Backend {
	if r.fallback == nil {
		return nil
	}
	return r.fallback
}

// delegateListing is delegate for tag lists and referrers, which the fallback passes through to
// its upstream: with none, this registry answers them itself.
func (r *Registry) delegateListing(t registryapi.Target) registryapi.Backend {
	if t.Registry == nil {
		return nil
	}
	return r.delegate(t)
}

// lookupBlob reports whether repo is hosted and whether it holds d.
func (r *Registry) lookupBlob(repo string, d digest.Digest) (hosted, held bool) {
	_ = r.db.View(func(tx *bolt.Tx) error {
		hosted = hostedRepo(tx, repo)
		held = hosted && holds(tx, repo, d)
		return nil
	})
	return hosted, held
}

func (r *Registry) isHostedRepo(repo string) bool {
	found := false
	_ = r.db.View(func(tx *bolt.Tx) error {
		found = hostedRepo(tx, repo)
		return nil
	})
	return found
}

// OpenBlob opens blob d of a hosted repository, or asks the fallback.
func (r *Registry) OpenBlob(ctx context.Context, t registryapi.Target, d digest.Digest) (registryapi.Blob, error) {
	hosted, held := r.lookupBlob(t.Repo, d)
	if !hosted {
		if b := r.delegate(t); b != nil {
			return b.OpenBlob(ctx, t, d)
		}
	}
	if !held {
		return nil, fmt.Errorf("blob %s in %s: %w", d, t.Repo, errdefs.ErrNotFound)
	}
	f, info, err := r.st.Open(d)
	if err != nil {
		return nil, err
	}
	return &fileBlob{f: f, size: info.Size}, nil
}

// StatBlob returns the size of blob d of a hosted repository, or asks the fallback.
func (r *Registry) StatBlob(ctx context.Context, t registryapi.Target, d digest.Digest) (int64, error) {
	hosted, held := r.lookupBlob(t.Repo, d)
	if !hosted {
		if b := r.delegate(t); b != nil {
			return b.StatBlob(ctx, t, d)
		}
	}
	if !held {
		return 0, fmt.Errorf("blob %s in %s: %w", d, t.Repo, errdefs.ErrNotFound)
	}
	info, err := r.st.Stat(d)
	if err != nil {
		return 0, err
	}
	return info.Size, nil
}

// GetManifest returns a manifest of a hosted repository by tag or digest, with the media type it
// was pushed with (accept is not consulted: a pushed manifest has one form), or asks the fallback.
func (r *Registry) GetManifest(ctx context.Context, t registryapi.Target, ref string, accept []string) (*registryapi.Manifest, error) {
	var (
		hosted, found bool
		d             digest.Digest
		mt            string
	)
	_ = r.db.View(func(tx *bolt.Tx) error {
		if hosted = hostedRepo(tx, t.Repo); !hosted {
			return nil
		}
		if strings.Contains(ref, ":") {
			d = digest.Digest(ref)
			var rec manifestRecord
			rec, found = getJSON[manifestRecord](tx.Bucket(bucketManifests), key(t.Repo, ref))
			mt = rec.MediaType
			return nil
		}
		var tr tagRecord
		tr, found = getJSON[tagRecord](tx.Bucket(bucketTags), key(t.Repo, ref))
		d, mt = tr.Digest, tr.MediaType
		return nil
	})
	if !hosted {
		if b := r.delegate(t); b != nil {
			return b.GetManifest(ctx, t, ref, accept)
		}
	}
	if !found {
		return nil, fmt.Errorf("manifest %s:%s: %w", t.Repo, ref, errdefs.ErrNotFound)
	}
	f, info, err := r.st.Open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info.Size > origin.MaxManifestSize {
		return nil, fmt.Errorf("manifest %s is %d bytes: %w", d, info.Size, errdefs.ErrTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(f, origin.MaxManifestSize))
	if err != nil {
		return nil, fmt.Errorf("hosted: reading manifest %s: %w", d, err)
	}
	return &registryapi.Manifest{MediaType: mt, Digest: d, Body: body, Source: "hosted"}, nil
}

// maxTagsPage bounds a tag list answer: a client asking for everything gets pages of this size
// with Link headers, which the spec allows.
const maxTagsPage = 10000

// Tags lists a hosted repository's tags in order, after last, at most n when n > 0 (and never
// more than maxTagsPage), with a Link to the next page when there is one; or asks the fallback.
func (r *Registry) Tags(ctx context.Context, t registryapi.Target, n int, last string) (*origin.Passthrough, error) {
	if !r.isHostedRepo(t.Repo) {
		if b := r.delegateListing(t); b != nil {
			return b.Tags(ctx, t, n, last)
		}
	}
	if n <= 0 || n > maxTagsPage {
		n = maxTagsPage
	}
	var (
		hosted bool
		tags   = []string{}
		more   bool
	)
	_ = r.db.View(func(tx *bolt.Tx) error {
		if hosted = hostedRepo(tx, t.Repo); !hosted {
			return nil
		}
		p := prefix(t.Repo)
		c := tx.Bucket(bucketTags).Cursor()
		start := p
		if last != "" {
			start = key(t.Repo, last)
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
		return nil, fmt.Errorf("repository %s: %w", t.Repo, errdefs.ErrNotFound)
	}
	var link string
	if more {
		q := url.Values{"n": {strconv.Itoa(n)}, "last": {tags[len(tags)-1]}}
		link = fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, t.Repo, q.Encode())
	}
	return registryapi.TagList(t.Repo, tags, link)
}

// Referrers lists the manifests of a hosted repository whose subject is d, those of the given
// artifactType when it is not "", as an OCI image index; or asks the fallback. Without a fallback,
// a repository that is not hosted has an empty list.
func (r *Registry) Referrers(ctx context.Context, t registryapi.Target, d digest.Digest, artifactType string) (*origin.Passthrough, error) {
	var hosted bool
	list := []descriptor{}
	_ = r.db.View(func(tx *bolt.Tx) error {
		if hosted = hostedRepo(tx, t.Repo); !hosted {
			return nil
		}
		scan(tx.Bucket(bucketReferrers), prefix(t.Repo, d.String()), func(_, v []byte) bool {
			var desc descriptor
			if json.Unmarshal(v, &desc) == nil && (artifactType == "" || desc.ArtifactType == artifactType) {
				list = append(list, desc)
			}
			return true
		})
		return nil
	})
	if !hosted {
		if b := r.delegateListing(t); b != nil {
			return b.Referrers(ctx, t, d, artifactType)
		}
		// Nothing refers to d here: the spec's answer is an empty list, not an error.
	}
	body, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}{2, mediaTypeIndex, list})
	if err != nil {
		return nil, err
	}
	p := &origin.Passthrough{Status: http.StatusOK, ContentType: mediaTypeIndex, Body: body}
	if artifactType != "" {
		p.FiltersApplied = "artifactType"
	}
	return p, nil
}

// fileBlob is committed content open from the store.
type fileBlob struct {
	f    *os.File
	size int64
}

func (b *fileBlob) Size() int64    { return b.size }
func (b *fileBlob) Source() string { return "hosted" }
func (b *fileBlob) Close() error   { return b.f.Close() }

// CopyRange hands the section to w as an *io.LimitedReader over the *os.File, so that the
// server's ReadFrom can use sendfile.
func (b *fileBlob) CopyRange(_ context.Context, w io.Writer, off, n int64) (int64, error) {
	if off < 0 || off > b.size {
		return 0, fmt.Errorf("offset %d of %d bytes: %w", off, b.size, errdefs.ErrInvalid)
	}
	if n < 0 || off+n > b.size {
		n = b.size - off
	}
	if _, err := b.f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	return io.Copy(w, &io.LimitedReader{R: b.f, N: n})
}
