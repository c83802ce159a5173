package oci

import (
	"encoding/json"
	"testing"
)

func TestManifestMediaType(t *testing.T) {
	const other = "application/vnd.example.manifest+json"
	for _, tc := range []struct {
		name    string
		body    string
		claimed string
		want    string
	}{
		{"the body's type wins over a claim", `{"mediaType":"` + MediaTypeImageManifest + `","layers":[]}`, MediaTypeImageIndex, MediaTypeImageManifest},
		{"the body's type with no claim", `{"mediaType":"` + MediaTypeDockerManifestList + `","manifests":[]}`, "", MediaTypeDockerManifestList},
		{"an unknown body type is kept", `{"mediaType":"` + other + `"}`, MediaTypeImageManifest, other},
		{"no type, no claim", `{"layers":[]}`, "", ""},
		{"index claim for an index", `{"manifests":[]}`, MediaTypeImageIndex, MediaTypeImageIndex},
		{"Docker list claim for an index", `{"manifests":[{"digest":"sha256:00"}]}`, MediaTypeDockerManifestList, MediaTypeDockerManifestList},
		{"index claim for an image", `{"layers":[]}`, MediaTypeImageIndex, ""},
		{"index claim for an empty object", `{}`, MediaTypeImageIndex, ""},
		{"image claim for an image", `{"layers":[]}`, MediaTypeImageManifest, MediaTypeImageManifest},
		{"image claim for an empty object", `{}`, MediaTypeDockerManifest, MediaTypeDockerManifest},
		{"image claim for an index", `{"manifests":[]}`, MediaTypeImageManifest, ""},
		{"any other claim for an image", `{"layers":[]}`, other, other},
		{"null manifests is no index", `{"manifests":null}`, MediaTypeImageManifest, MediaTypeImageManifest},
		{"not JSON", `not json`, MediaTypeImageManifest, ""},
		{"not an object", `[]`, MediaTypeImageManifest, ""},
		{"manifests not a list", `{"manifests":{}}`, MediaTypeImageIndex, ""},
		{"layers not a list", `{"mediaType":"` + MediaTypeImageManifest + `","layers":"x"}`, MediaTypeImageManifest, ""},
		{"mediaType not a string", `{"mediaType":1}`, MediaTypeImageManifest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ManifestMediaType([]byte(tc.body), tc.claimed); got != tc.want {
				t.Errorf("ManifestMediaType(%s, %q) = %q, want %q", tc.body, tc.claimed, got, tc.want)
			}
		})
	}
}

func TestTypes(t *testing.T) {
	for _, tc := range []struct {
		name            string
		mt              string
		manifest, index bool
	}{
		{"OCI index", MediaTypeImageIndex, true, true},
		{"OCI manifest", MediaTypeImageManifest, true, false},
		{"Docker list", MediaTypeDockerManifestList, true, true},
		{"Docker manifest", MediaTypeDockerManifest, true, false},
		{"Docker schema 1", "application/vnd.docker.distribution.manifest.v1+prettyjws", false, false},
		{"a layer", "application/vnd.oci.image.layer.v1.tar+gzip", false, false},
		{"parameters are not stripped", MediaTypeImageIndex + "; charset=utf-8", false, false},
		{"empty", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsManifestType(tc.mt); got != tc.manifest {
				t.Errorf("IsManifestType(%q) = %v", tc.mt, got)
			}
			if got := IsIndexType(tc.mt); got != tc.index {
				t.Errorf("IsIndexType(%q) = %v", tc.mt, got)
			}
		})
	}
}

func TestManifestTypesIsACopy(t *testing.T) {
	a := ManifestTypes()
	a[0] = "changed"
	_ = append(a[:1], "appended")
	if b := ManifestTypes(); b[0] != MediaTypeImageIndex || b[1] != MediaTypeImageManifest || len(b) != 4 {
		t.Errorf("ManifestTypes() = %v after a caller changed its copy", b)
	}
	for _, mt := range ManifestTypes() {
		if !IsManifestType(mt) {
			t.Errorf("IsManifestType(%q) = false for a member of ManifestTypes", mt)
		}
	}
}

func TestManifestDecode(t *testing.T) {
	for _, tc := range []struct {
		name     string
		body     string
		index    bool
		config   bool
		children int
	}{
		{"image", `{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:01","size":2},"layers":[{"digest":"sha256:02","size":3}]}`, false, true, 1},
		{"artifact without config", `{"artifactType":"a","blobs":[{"digest":"sha256:03"}]}`, false, false, 1},
		{"index", `{"manifests":[{"digest":"sha256:04","platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}`, true, false, 1},
		{"empty index", `{"manifests":[]}`, true, false, 0},
		{"empty config object", `{"config":{}}`, false, true, 0},
		{"unknown fields", `{"future":[1,2],"layers":[]}`, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m Manifest
			if err := json.Unmarshal([]byte(tc.body), &m); err != nil {
				t.Fatal(err)
			}
			if m.IsIndex() != tc.index {
				t.Errorf("IsIndex() = %v", m.IsIndex())
			}
			if (m.Config != nil) != tc.config {
				t.Errorf("Config = %v", m.Config)
			}
			if n := len(m.Layers) + len(m.Blobs) + len(m.Manifests); n != tc.children {
				t.Errorf("%d layers, blobs and manifests, want %d", n, tc.children)
			}
		})
	}
	var idx Manifest
	_ = json.Unmarshal([]byte(`{"manifests":[{"digest":"sha256:04","platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}`), &idx)
	if p := idx.Manifests[0].Platform; p == nil || p.String() != "linux/arm64/v8" {
		t.Errorf("platform %v, want linux/arm64/v8", p)
	}
}

func TestIndexEncode(t *testing.T) {
	for _, tc := range []struct {
		name string
		idx  Index
		want string
	}{
		{"empty referrers list", Index{SchemaVersion: 2, MediaType: MediaTypeImageIndex, Manifests: []Descriptor{}},
			`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`},
		{"a referrer", Index{SchemaVersion: 2, MediaType: MediaTypeImageIndex, Manifests: []Descriptor{
			{MediaType: MediaTypeImageManifest, Digest: "sha256:05", Size: 7, ArtifactType: "a", Annotations: map[string]string{"k": "v"}}}},
			`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:05","size":7,"artifactType":"a","annotations":{"k":"v"}}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.idx)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
}
