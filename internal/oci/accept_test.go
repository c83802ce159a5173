package oci

import (
	"slices"
	"testing"
)

func TestNormalizeAccept(t *testing.T) {
	all := ManifestTypes()
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{name: "none", in: nil, want: nil},
		{name: "unknown types only", in: []string{"application/vnd.docker.distribution.manifest.v1+prettyjws", "text/html"}, want: nil},
		{name: "one known type", in: []string{MediaTypeDockerManifest}, want: []string{MediaTypeDockerManifest}},
		{name: "order, case, parameters and repeats do not matter",
			in:   []string{MediaTypeDockerManifest + ";q=0.5", "APPLICATION/VND.OCI.IMAGE.INDEX.V1+JSON", " " + MediaTypeDockerManifest + " ", "application/x-made-up"},
			want: []string{MediaTypeImageIndex, MediaTypeDockerManifest}},
		// containerd sends the four types and */*: the origin is asked for the four by name.
		{name: "containerd's list", in: []string{MediaTypeDockerManifest, MediaTypeDockerManifestList, MediaTypeImageManifest, MediaTypeImageIndex, "*/*"}, want: all},
		{name: "a bare wildcard is every known type", in: []string{"*/*"}, want: all},
		{name: "application/*", in: []string{"text/plain", "application/*"}, want: all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NormalizeAccept(tc.in); !slices.Equal(got, tc.want) {
				t.Fatalf("NormalizeAccept(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
