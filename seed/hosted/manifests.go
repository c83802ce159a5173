package hosted

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/registryapi"
)

// childrenOf lists what a manifest or an index needs its repository to hold: config, layers and
// blobs (except non-distributable ones, which name URLs to fetch from), and an index's manifests.
func childrenOf(m *oci.Manifest) ([]digest.Digest, error) {
	var out []digest.Digest
	add := func(d oci.Descriptor, optional bool) error {
		if err := d.Digest.Validate(); err != nil {
			return fmt.Errorf("descriptor digest %q: %w", d.Digest, registryapi.ErrManifestInvalid)
		}
		if !optional || len(d.URLs) == 0 {
			out = append(out, d.Digest)
		}
		return nil
	}
	if m.Config != nil {
		if err := add(*m.Config, false); err != nil {
			return nil, err
		}
	}
	for _, list := range [][]oci.Descriptor{m.Layers, m.Blobs} {
		for _, d := range list {
			if err := add(d, true); err != nil {
				return nil, err
			}
		}
	}
	for _, d := range m.Manifests {
		if err := add(d, false); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PutManifest stores m in repo and points tags at it. Every config, layer and child manifest
// must be held by repo already (errors wrap registryapi.ErrManifestBlobUnknown); a subject need
// not be.
func (r *Registry) PutManifest(_ context.Context, repo string, tags []string, m *registryapi.Manifest) error {
	var doc oci.Manifest
	if err := json.Unmarshal(m.Body, &doc); err != nil {
		return fmt.Errorf("manifest %s: %w", m.Digest, registryapi.ErrManifestInvalid)
	}
	children, err := childrenOf(&doc)
	if err != nil {
		return err
	}
	rec := manifestRecord{MediaType: m.MediaType, Size: int64(len(m.Body)), ArtifactType: doc.ArtifactType, Children: children}
	if rec.ArtifactType == "" && doc.Config != nil {
		rec.ArtifactType = doc.Config.MediaType
	}
	if doc.Subject != nil {
		if err := doc.Subject.Digest.Validate(); err != nil {
			return fmt.Errorf("subject digest %q: %w", doc.Subject.Digest, registryapi.ErrManifestInvalid)
		}
		rec.Subject = doc.Subject.Digest
	}
	missing := func(tx *bolt.Tx) error {
		for _, c := range children {
			if !holds(tx, repo, c) {
				return fmt.Errorf("%s references %s: %w", m.Digest, c, registryapi.ErrManifestBlobUnknown)
			}
		}
		return nil
	}
	// Checked before storing anything, and again in the transaction that indexes the manifest,
	// in case a delete came in between.
	if err := r.db.View(missing); err != nil {
		return err
	}
	defer r.hold(m.Digest)()
	if err := r.st.PutManifest(m.Digest, m.MediaType, m.Body); err != nil {
		return fmt.Errorf("hosted: storing manifest %s: %w", m.Digest, err)
	}
	now := time.Now().UTC()
	err = r.db.Update(func(tx *bolt.Tx) error {
		if err := missing(tx); err != nil {
			return err
		}
		if err := addRepo(tx, repo); err != nil {
			return err
		}
		d := m.Digest.String()
		if err := putJSON(tx.Bucket(bucketManifests), key(repo, d), rec); err != nil {
			return err
		}
		refs := tx.Bucket(bucketRefs)
		if err := refs.Put(key(d, repo, "m"), []byte{}); err != nil {
			return err
		}
		for _, c := range children {
			if err := refs.Put(key(c.String(), repo, "c", d), []byte{}); err != nil {
				return err
			}
		}
		if rec.Subject != "" {
			desc := oci.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: rec.Size, ArtifactType: rec.ArtifactType, Annotations: doc.Annotations}
			if err := putJSON(tx.Bucket(bucketReferrers), key(repo, rec.Subject.String(), d), desc); err != nil {
				return err
			}
		}
		for _, tag := range tags {
			if err := putJSON(tx.Bucket(bucketTags), key(repo, tag), tagRecord{Digest: m.Digest, MediaType: m.MediaType, Pushed: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return indexError("manifest", m.Digest, err)
	}
	r.log.Info("manifest committed", "repo", repo, "digest", m.Digest, "media_type", m.MediaType, "bytes", rec.Size, "tags", tags)
	r.committed(m.Digest)
	return nil
}

// DeleteManifest removes manifest d from repo, with the tags that name it and its entry in its
// subject's referrers. The bytes stay in the store until its GC evicts them, since the agent may
// hold the same content for a mirrored image.
func (r *Registry) DeleteManifest(_ context.Context, repo string, d digest.Digest) error {
	if !r.deletes {
		return fmt.Errorf("hosted: deletes are disabled: %w", errdefs.ErrUnsupported)
	}
	return r.db.Update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketManifests)
		rec, ok := getJSON[manifestRecord](mb, key(repo, d.String()))
		if !ok {
			return fmt.Errorf("manifest %s in %s: %w", d, repo, errdefs.ErrNotFound)
		}
		if err := mb.Delete(key(repo, d.String())); err != nil {
			return err
		}
		refs := tx.Bucket(bucketRefs)
		if err := refs.Delete(key(d.String(), repo, "m")); err != nil {
			return err
		}
		for _, c := range rec.Children {
			if err := refs.Delete(key(c.String(), repo, "c", d.String())); err != nil {
				return err
			}
		}
		if rec.Subject != "" {
			if err := tx.Bucket(bucketReferrers).Delete(key(repo, rec.Subject.String(), d.String())); err != nil {
				return err
			}
		}
		tb := tx.Bucket(bucketTags)
		var stale [][]byte
		scan(tb, prefix(repo), func(k, v []byte) bool {
			var t tagRecord
			if json.Unmarshal(v, &t) == nil && t.Digest == d {
				stale = append(stale, key(repo, string(k)))
			}
			return true
		})
		for _, k := range stale {
			if err := tb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteTag removes a tag; the manifest it named stays.
func (r *Registry) DeleteTag(_ context.Context, repo, tag string) error {
	if !r.deletes {
		return fmt.Errorf("hosted: deletes are disabled: %w", errdefs.ErrUnsupported)
	}
	return r.db.Update(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTags)
		if tb.Get(key(repo, tag)) == nil {
			return fmt.Errorf("tag %s:%s: %w", repo, tag, errdefs.ErrNotFound)
		}
		return tb.Delete(key(repo, tag))
	})
}

// DeleteBlob removes blob d from repo. Manifests of repo that reference it keep it from GC.
func (r *Registry) DeleteBlob(_ context.Context, repo string, d digest.Digest) error {
	if !r.deletes {
		return fmt.Errorf("hosted: deletes are disabled: %w", errdefs.ErrUnsupported)
	}
	return r.db.Update(func(tx *bolt.Tx) error {
		if _, ok := blobSize(tx, repo, d); !ok {
			return fmt.Errorf("blob %s in %s: %w", d, repo, errdefs.ErrNotFound)
		}
		return removeBlob(tx, repo, d)
	})
}

// ResolveTag returns what a pushed tag names, for peers asking a seed. ok is false when repo is
// not hosted or has no such tag.
func (r *Registry) ResolveTag(repo, tag string) (d digest.Digest, mediaType string, pushed time.Time, ok bool) {
	_ = r.db.View(func(tx *bolt.Tx) error {
		var t tagRecord
		if t, ok = getJSON[tagRecord](tx.Bucket(bucketTags), key(repo, tag)); ok {
			d, mediaType, pushed = t.Digest, t.MediaType, t.Pushed
		}
		return nil
	})
	return d, mediaType, pushed, ok
}

// Referenced reports whether a hosted repository keeps d: as a blob, a manifest, or content a
// manifest references, or while it is being committed. GC must not evict such content.
func (r *Registry) Referenced(d digest.Digest) bool {
	r.mu.Lock()
	pending := r.pending[d] > 0
	r.mu.Unlock()
	if pending {
		return true
	}
	found := false
	_ = r.db.View(func(tx *bolt.Tx) error {
		found = referenced(tx, d)
		return nil
	})
	return found
}
