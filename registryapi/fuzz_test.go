package registryapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/shoal-oci/shoal/registryapi"
)

// FuzzRoute feeds the server arbitrary requests (FuzzParsers feeds its parsers alone). It may
// not panic, and every answer of the server is a success or a well-formed OCI error: never a
// 500 (the backend here fails only with not found), never a stack trace or a path.
func FuzzRoute(f *testing.F) {
	fx := newFixture()
	blob, manifest := fx.blob.String(), fx.manifest.String()
	for _, seed := range []struct {
		method      byte
		target, rng string
	}{
		{0, "/v2/", ""},
		{0, "/v2", ""},
		{1, "/v2/" + testRepo + "/manifests/latest", ""},
		{0, "/v2/" + testRepo + "/manifests/" + manifest + "?ns=docker.io", ""},
		{0, "/v2/" + testRepo + "/blobs/" + blob, "bytes=0-9"},
		{0, "/v2/" + testRepo + "/blobs/" + blob, "bytes=5-"},
		{0, "/v2/" + testRepo + "/blobs/" + blob, "bytes=-3"},
		{0, "/v2/" + testRepo + "/blobs/" + blob, "bytes=20-"},
		{0, "/v2/" + testRepo + "/blobs/" + blob, "bytes=0-1,3-4"},
		{0, "/v2/" + testRepo + "/blobs/" + blob, "bytes=5-2"},
		{0, "/v2/" + testRepo + "/blobs/" + blob, "items=0-1"},
		{0, "/v2/" + testRepo + "/blobs/" + blob, "bytes=99999999999999999999-"},
		{1, "/v2/" + testRepo + "/blobs/" + blob + "?ns=evil.example.com", ""},
		{0, "/v2/" + testRepo + "/tags/list?n=2&last=a", ""},
		{0, "/v2/" + testRepo + "/tags/list?n=-1", ""},
		{0, "/v2/" + testRepo + "/referrers/" + manifest + "?artifactType=x", ""},
		{2, "/v2/" + testRepo + "/blobs/uploads/", ""},
		{3, "/v2/" + testRepo + "/manifests/latest", ""},
		{0, "/v2/../../etc/passwd", ""},
		{0, "/v2/a/blobs/sha256:../../x", ""},
		{0, "/v2/a/blobs/sha256%3A..", ""},
		{0, "/v2/%2e%2e/manifests/latest", ""},
		{0, "/v2/library%2Falpine/manifests/latest", ""},
		{0, "/v2//manifests/latest", ""},
		{0, "/v2/a//b/manifests/latest", ""},
		{0, "/v2/a/manifests/" + strings.Repeat("t", 129), ""},
		{0, "/v2/a/manifests/.x", ""},
		{0, "/v2/a/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", ""},
		{0, "/v2/a/manifests/sha256:", ""},
		{0, "/v2/org/manifests/app/blobs/" + blob, ""},
		{0, "/v2/a/blobs/uploads", ""},
		{0, "*", ""},
		{0, "/v2/a/manifests/%", ""},
	} {
		f.Add(seed.method, seed.target, seed.rng)
	}
	s := registryapi.New(fx.mem)
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch}

	f.Fuzz(func(t *testing.T, m byte, target, rng string) {
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
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)

		body := rec.Body.Bytes()
		for _, leak := range []string{"/tmp", "goroutine", "panic", "runtime error"} {
			if bytes.Contains(body, []byte(leak)) {
				t.Fatalf("%s %q (Range %q): body contains %q: %s", r.Method, target, rng, leak, body)
			}
		}
		switch {
		case rec.Code == http.StatusOK || rec.Code == http.StatusPartialContent:
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				t.Fatalf("%s %q succeeded", r.Method, target)
			}
			return
		case rec.Code < 400 || rec.Code >= 500:
			t.Fatalf("%s %q (Range %q): status %d", r.Method, target, rng, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %q: error with Content-Type %q", r.Method, target, ct)
		}
		if r.Method == http.MethodHead {
			if len(body) != 0 {
				t.Fatalf("HEAD %q: error with a body", target)
			}
			return
		}
		var e ociErrors
		if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 || e.Errors[0].Code == "" {
			t.Fatalf("%s %q (Range %q): status %d with body %q, not an OCI error", r.Method, target, rng, rec.Code, body)
		}
	})
}
