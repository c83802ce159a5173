package hosted

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// The index, in hosted.db. Keys join their parts with a NUL byte, which no repository name, tag
// or digest contains, so that a prefix scan lists one repository's entries in order.
//
//	repos      repo                              → ""     a repository exists once content is pushed to it
//	tags       repo NUL tag                      → tagRecord
//	manifests  repo NUL digest                   → manifestRecord
//	blobs      repo NUL digest                   → size
//	referrers  repo NUL subject NUL digest       → oci.Descriptor of the referrer
//	refs       digest NUL repo NUL why           → ""     why content is kept: "b" (a blob of repo),
//	                                                      "m" (a manifest of repo), "c" NUL m
//	                                                      (a child of manifest m of repo)
var (
	bucketRepos     = []byte("repos")
	bucketTags      = []byte("tags")
	bucketManifests = []byte("manifests")
	bucketBlobs     = []byte("blobs")
	bucketReferrers = []byte("referrers")
	bucketRefs      = []byte("refs")
)

func createBuckets(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketRepos, bucketTags, bucketManifests, bucketBlobs, bucketReferrers, bucketRefs} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return nil
}

func key(parts ...string) []byte { return []byte(strings.Join(parts, "\x00")) }

// prefix is key(parts...) followed by the separator, to scan what lies under it.
func prefix(parts ...string) []byte { return append(key(parts...), 0) }

// tagRecord is what a tag names.
type tagRecord struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Pushed    time.Time     `json:"pushed"`
}

// manifestRecord is a manifest of a repository, with what it references.
type manifestRecord struct {
	MediaType    string          `json:"mediaType"`
	Size         int64           `json:"size"`
	ArtifactType string          `json:"artifactType,omitempty"`
	Subject      digest.Digest   `json:"subject,omitempty"`
	Children     []digest.Digest `json:"children,omitempty"`
}

// scan calls fn with each key under p (with p removed) and its value, in key order, until fn
// returns false.
func scan(b *bolt.Bucket, p []byte, fn func(k, v []byte) bool) {
	c := b.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if !fn(k[len(p):], v) {
			return
		}
	}
}

func hostedRepo(tx *bolt.Tx, repo string) bool {
	return tx.Bucket(bucketRepos).Get([]byte(repo)) != nil
}

func getJSON[T any](b *bolt.Bucket, k []byte) (T, bool) {
	var v T
	raw := b.Get(k)
	if raw == nil {
		return v, false
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, false
	}
	return v, true
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

// blobSize returns the size of blob d of repo, if repo holds it.
func blobSize(tx *bolt.Tx, repo string, d digest.Digest) (int64, bool) {
	raw := tx.Bucket(bucketBlobs).Get(key(repo, d.String()))
	if raw == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	return n, err == nil
}

// holds reports whether repo holds d as a blob or a manifest.
func holds(tx *bolt.Tx, repo string, d digest.Digest) bool {
	return tx.Bucket(bucketBlobs).Get(key(repo, d.String())) != nil ||
		tx.Bucket(bucketManifests).Get(key(repo, d.String())) != nil
}

func addRepo(tx *bolt.Tx, repo string) error {
	return tx.Bucket(bucketRepos).Put([]byte(repo), []byte{})
}

func addBlob(tx *bolt.Tx, repo string, d digest.Digest, size int64) error {
	if err := addRepo(tx, repo); err != nil {
		return err
	}
	if err := tx.Bucket(bucketBlobs).Put(key(repo, d.String()), []byte(strconv.FormatInt(size, 10))); err != nil {
		return err
	}
	return tx.Bucket(bucketRefs).Put(key(d.String(), repo, "b"), []byte{})
}

func removeBlob(tx *bolt.Tx, repo string, d digest.Digest) error {
	if err := tx.Bucket(bucketBlobs).Delete(key(repo, d.String())); err != nil {
		return err
	}
	return tx.Bucket(bucketRefs).Delete(key(d.String(), repo, "b"))
}

// referenced reports whether any repository keeps d.
func referenced(tx *bolt.Tx, d digest.Digest) bool {
	found := false
	scan(tx.Bucket(bucketRefs), prefix(d.String()), func(_, _ []byte) bool {
		found = true
		return false
	})
	return found
}
