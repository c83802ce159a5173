package records

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/internal/tags"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

const manifestType = "application/vnd.oci.image.manifest.v1+json"

// openTags keeps tag records in a database of their own, as the store keeps them in meta.db.
func openTags(t *testing.T) *Tags {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketTags); return err }); err != nil {
		t.Fatal(err)
	}
	return NewTags(db)
}

func TestTags(t *testing.T) {
	t.Parallel()
	keys := []string{
		"docker.io/library/alpine:latest|oci",
		"docker.io/library/alpine:latest|docker",
		"docker.io/library/alpine:latest2|oci",
		"docker.io/library/alpine:3|oci",
		"ghcr.io/org/app:latest|oci",
		"",
	}
	for _, tc := range []struct {
		name   string
		del    bool // Delete(delPfx) first
		delPfx string
		prefix string
		want   []string
	}{
		{name: "one tag's resolutions", prefix: "docker.io/library/alpine:latest|",
			want: []string{"docker.io/library/alpine:latest|docker", "docker.io/library/alpine:latest|oci"}},
		{name: "prefix without separator matches more", prefix: "docker.io/library/alpine:latest",
			want: []string{"docker.io/library/alpine:latest2|oci", "docker.io/library/alpine:latest|docker", "docker.io/library/alpine:latest|oci"}},
		{name: "a registry", prefix: "ghcr.io/", want: []string{"ghcr.io/org/app:latest|oci"}},
		{name: "nothing", prefix: "quay.io/"},
		{name: "past the last key", prefix: "zzz"},
		{name: "everything", prefix: "", want: []string{
			"docker.io/library/alpine:3|oci", "docker.io/library/alpine:latest2|oci",
			"docker.io/library/alpine:latest|docker", "docker.io/library/alpine:latest|oci", "ghcr.io/org/app:latest|oci",
		}},
		{name: "delete one tag", del: true, delPfx: "docker.io/library/alpine:latest|", prefix: "docker.io/",
			want: []string{"docker.io/library/alpine:3|oci", "docker.io/library/alpine:latest2|oci"}},
		{name: "delete a registry", del: true, delPfx: "docker.io/", prefix: "",
			want: []string{"ghcr.io/org/app:latest|oci"}},
		{name: "delete nothing", del: true, delPfx: "quay.io/", prefix: "ghcr.io/", want: []string{"ghcr.io/org/app:latest|oci"}},
		{name: "delete everything", del: true, delPfx: "", prefix: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openTags(t)
			resolved := time.Now().Add(-time.Hour).Truncate(time.Second).UTC() // within tags.MaxAge
			for i, k := range keys {
				if k == "" {
					continue // bbolt refuses empty keys
				}
				rec := tags.Record{Digest: digest.FromString(k), MediaType: manifestType, Resolved: resolved.Add(time.Duration(i) * time.Second)}
				if err := s.Put(k, rec); err != nil {
					t.Fatal(err)
				}
			}
			if tc.del {
				if err := s.Delete(tc.delPfx); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.List(tc.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if gotKeys := slices.Sorted(maps.Keys(got)); !slices.Equal(gotKeys, tc.want) {
				t.Fatalf("Tags(%q) keys = %q, want %q", tc.prefix, gotKeys, tc.want)
			}
			for k, rec := range got {
				i := slices.Index(keys, k)
				if rec.Digest != digest.FromString(k) || rec.MediaType != manifestType || !rec.Resolved.Equal(resolved.Add(time.Duration(i)*time.Second)) {
					t.Errorf("Tags()[%q] = %+v", k, rec)
				}
			}
		})
	}
}

func TestPutTagOverwrites(t *testing.T) {
	t.Parallel()
	s := openTags(t)
	const key = "docker.io/library/alpine:latest|oci"
	for _, body := range []string{"first", "second"} {
		if err := s.Put(key, tags.Record{Digest: digest.FromString(body), MediaType: manifestType, Resolved: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.List(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[key].Digest != digest.FromString("second") {
		t.Errorf("Tags = %+v, want the second record only", got)
	}
}

// TestTagRecordsBounded: however many Accept sets a tag is asked for, it keeps the newest
// tags.MaxPerTag records; records past tags.MaxAge are neither answered nor kept; and the sweep
// holds the whole bucket to its cap, the oldest going first.
func TestTagRecordsBounded(t *testing.T) {
	t.Parallel()
	s := openTags(t)
	now := time.Now().Truncate(time.Second)
	const n = 3 * tags.MaxPerTag
	for i := range n {
		key := tags.Key("docker.io", "library/alpine", "latest", []string{fmt.Sprintf("type/%d", i)})
		if err := s.Put(key, tags.Record{Digest: digest.FromString(key), MediaType: manifestType,
			Resolved: now.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	other := tags.Key("docker.io", "library/alpine", "3", nil)
	if err := s.Put(other, tags.Record{Digest: digest.FromString(other), MediaType: manifestType, Resolved: now}); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(tags.Prefix("docker.io", "library/alpine", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != tags.MaxPerTag {
		t.Fatalf("a tag asked with %d Accept sets kept %d records, want %d", n, len(got), tags.MaxPerTag)
	}
	for _, rec := range got {
		if rec.Resolved.Before(now.Add(time.Duration(n-tags.MaxPerTag) * time.Second)) {
			t.Errorf("kept a record resolved at %s, older than the newest %d", rec.Resolved, tags.MaxPerTag)
		}
	}
	if got, _ := s.List(tags.Prefix("docker.io", "library/alpine", "3")); len(got) != 1 {
		t.Errorf("another tag's records were trimmed: %d left", len(got))
	}

	old := tags.Key("docker.io", "library/alpine", "old", nil)
	if err := s.Put(old, tags.Record{Digest: digest.FromString(old), MediaType: manifestType,
		Resolved: now.Add(-tags.MaxAge - time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.List(old); len(got) != 0 {
		t.Errorf("a record past tags.MaxAge is answered: %v", got)
	}

	// The sweep, with a small cap: what is past the age goes, then the oldest.
	err = s.db.Update(func(tx *bolt.Tx) error {
		return trimTags(tx.Bucket(bucketTags), nil, 4, now.Add(-tags.MaxAge))
	})
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]tags.Record{}
	_ = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTags).ForEach(func(k, v []byte) error {
			var rec tags.Record
			_ = json.Unmarshal(v, &rec)
			all[string(k)] = rec
			return nil
		})
	})
	if len(all) != 4 {
		t.Fatalf("after a sweep capped at 4, %d records are left", len(all))
	}
	if _, ok := all[old]; ok {
		t.Error("the sweep kept a record past tags.MaxAge")
	}
	for k, rec := range all {
		if rec.Resolved.Before(now.Add(time.Duration(n-4) * time.Second)) {
			t.Errorf("the sweep kept %q (resolved %s) over newer records", k, rec.Resolved)
		}
	}
}
