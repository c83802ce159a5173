package hosted

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/registryapi"
)

// FuzzPush sends arbitrary push requests (method, path, Content-Range, Content-Type, body) to the
// server over hosted repositories on a real store. Nothing may panic or answer 500, and every
// error is a well-formed OCI error that shows no path.
func FuzzPush(f *testing.F) {
	blob := []byte("fuzzed blob")
	d := digest.FromBytes(blob).String()
	manifest := `{"schemaVersion":2,"mediaType":"` + mtManifest + `","config":{"mediaType":"x","digest":"` + d + `","size":11},"layers":[]}`
	for _, seed := range []struct {
		method               byte
		target, cr, ct, body string
	}{
		{0, "/v2/a/b/blobs/uploads/?digest=" + d, "", "", string(blob)},
		{0, "/v2/a/b/blobs/uploads/", "", "", ""},
		{0, "/v2/a/b/blobs/uploads/?mount=" + d + "&from=a/b", "", "", ""},
		{0, "/v2/a/c/blobs/uploads/?mount=" + d, "", "", ""},
		{1, "/v2/a/b/blobs/uploads/XYZ", "0-3", "", "abcd"},
		{1, "/v2/a/b/blobs/uploads/XYZ", "bytes=9-3", "", "abcd"},
		{2, "/v2/a/b/blobs/uploads/XYZ?digest=" + d, "", "", ""},
		{2, "/v2/a/b/manifests/v1", "", mtManifest, manifest},
		{2, "/v2/a/b/manifests/" + d + "?tag=x", "", mtManifest, manifest},
		{2, "/v2/a/b/manifests/v1", "", "", `{"mediaType":"` + mtIndex + `","manifests":[{"digest":"sha256:x"}]}`},
		{2, "/v2/a/b/manifests/v1", "", ";", "{"},
		{3, "/v2/a/b/manifests/v1", "", "", ""},
		{3, "/v2/a/b/blobs/" + d, "", "", ""},
		{3, "/v2/a/b/blobs/uploads/XYZ", "", "", ""},
		{4, "/v2/a/b/tags/list?n=1&last=a", "", "", ""},
		{4, "/v2/a/b/referrers/" + d + "?artifactType=x", "", "", ""},
		{4, "/v2/a/b/blobs/uploads/XYZ", "", "", ""},
	} {
		f.Add(seed.method, seed.target, seed.cr, seed.ct, seed.body)
	}
	st, err := store.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	reg, err := New(st)
	if err != nil {
		f.Fatal(err)
	}
	defer reg.Close()
	srv := registryapi.New(reg, registryapi.WithPush(reg))
	methods := []string{http.MethodPost, http.MethodPatch, http.MethodPut, http.MethodDelete, http.MethodGet, http.MethodHead}

	f.Fuzz(func(t *testing.T, method byte, target, cr, ct, body string) {
		if !strings.HasPrefix(target, "/") {
			return
		}
		if _, err := url.ParseRequestURI(target); err != nil {
			return
		}
		req := httptest.NewRequest(methods[int(method)%len(methods)], "http://seed.test"+target, strings.NewReader(body))
		if cr != "" {
			req.Header.Set("Content-Range", cr)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", req.Method, target, rec.Code, rec.Body)
		}
		out := rec.Body.Bytes()
		for _, leak := range []string{"/tmp", "goroutine", "panic", "%!"} {
			if bytes.Contains(out, []byte(leak)) {
				t.Fatalf("%s %s leaks %q: %s", req.Method, target, leak, out)
			}
		}
		if rec.Code >= 400 && req.Method != http.MethodHead {
			var e struct {
				Errors []struct{ Code, Message string } `json:"errors"`
			}
			if err := json.Unmarshal(out, &e); err != nil || len(e.Errors) == 0 || e.Errors[0].Code == "" {
				t.Fatalf("%s %s: %d with a body that is no OCI error: %q", req.Method, target, rec.Code, out)
			}
		}
	})
}
