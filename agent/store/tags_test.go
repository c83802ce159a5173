package store

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/internal/tags"

	"github.com/opencontainers/go-digest"
)

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
		del    bool // DeleteTags(delPfx) first
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
			s := openStore(t, t.TempDir())
			resolved := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
			for i, k := range keys {
				if k == "" {
					continue // bbolt refuses empty keys
				}
				rec := tags.Record{Digest: digest.FromString(k), MediaType: manifestType, Resolved: resolved.Add(time.Duration(i) * time.Second)}
				if err := s.PutTag(k, rec); err != nil {
					t.Fatal(err)
				}
			}
			if tc.del {
				if err := s.DeleteTags(tc.delPfx); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.Tags(tc.prefix)
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
	s := openStore(t, t.TempDir())
	const key = "docker.io/library/alpine:latest|oci"
	for _, body := range []string{"first", "second"} {
		if err := s.PutTag(key, tags.Record{Digest: digest.FromString(body), MediaType: manifestType}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Tags(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[key].Digest != digest.FromString("second") {
		t.Errorf("Tags = %+v, want the second record only", got)
	}
}
