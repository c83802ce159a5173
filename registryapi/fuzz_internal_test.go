package registryapi

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/names"
)

// FuzzParsers feeds the Range parser, the reference parser and the router arbitrary input. None
// of them may panic, a range they accept lies inside the blob, a reference they accept is valid,
// and what they refuse is a client error.
func FuzzParsers(f *testing.F) {
	blob := digest.FromString("blob").String()
	for _, seed := range []struct {
		method      byte
		target, rng string
	}{
		{2, "/v2/", ""},
		{0, "/v2/library/alpine/manifests/latest", ""},
		{0, "/v2/library/alpine/blobs/" + blob, "bytes=0-9"},
		{0, "/v2/library/alpine/blobs/" + blob, "bytes=-3"},
		{0, "/v2/library/alpine/blobs/" + blob, "bytes=0-1,3-4"},
		{0, "/v2/library/alpine/blobs/" + blob, "bytes=99999999999999999999-"},
		{0, "/v2/../../etc/passwd", "items=0-1"},
		{3, "/v2/a/manifests/sha256:", "bytes=5-2"},
		{0, "/v2/a/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", ""},
	} {
		f.Add(seed.method, seed.target, seed.rng)
	}
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch}
	f.Fuzz(func(t *testing.T, m byte, target, rng string) {
		for _, size := range []int64{-1, 0, 1, 20, 1 << 62} {
			br, partial, err := parseRange(rng, size)
			switch {
			case err != nil:
				if err.Status != http.StatusRequestedRangeNotSatisfiable || err.Code != CodeRangeInvalid {
					t.Fatalf("parseRange(%q, %d) error %+v", rng, size, err)
				}
			case partial:
				if br.off < 0 || br.n <= 0 || br.off+br.n > size || br.off+br.n < br.off {
					t.Fatalf("parseRange(%q, %d) = %+v, outside the blob", rng, size, br)
				}
			case rng != "":
				t.Fatalf("parseRange(%q, %d) ignored a Range header", rng, size)
			}
		}
		if ref, err := parseReference(target); err == nil {
			if ref.digest != "" && ref.digest.Validate() != nil {
				t.Fatalf("parseReference(%q) accepted an invalid digest", target)
			}
			if ref.digest == "" && !names.ValidTag(ref.tag) {
				t.Fatalf("parseReference(%q) accepted an invalid tag", target)
			}
		}

		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Method = methods[int(m)%len(methods)]
		r.URL, r.RequestURI = u, target
		if rng != "" {
			r.Header.Set("Range", rng)
		}
		if _, err := parseRoute(r); err != nil && (err.Status < 400 || err.Status >= 500 || err.Code == "") {
			t.Fatalf("parseRoute(%q) error %+v", target, err)
		}
	})
}
