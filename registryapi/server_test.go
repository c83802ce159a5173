package registryapi_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/registryapi/registrytest"
)

const (
	goodDigest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

func TestBase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, method, target, body string
	}{
		{name: "GET with slash", method: http.MethodGet, target: "/v2/", body: "{}"},
		{name: "GET without slash", method: http.MethodGet, target: "/v2", body: "{}"},
		{name: "HEAD with slash", method: http.MethodHead, target: "/v2/"},
		{name: "HEAD without slash", method: http.MethodHead, target: "/v2"},
		{name: "ns is not checked at the base", method: http.MethodGet, target: "/v2/?ns=evil.example.com", body: "{}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, b, _ := newTestServer(t)
			rec := serve(s, tc.method, tc.target, nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d, want 200", rec.Code)
			}
			if v := rec.Header().Get("Docker-Distribution-API-Version"); v != "registry/2.0" {
				t.Errorf("Docker-Distribution-API-Version = %q", v)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got := rec.Body.String(); got != tc.body {
				t.Errorf("body = %q, want %q", got, tc.body)
			}
			if n := b.calls.Load(); n != 0 {
				t.Errorf("backend called %d times", n)
			}
		})
	}
}

// TestBadRequests covers requests refused before the backend is asked: malformed names,
// references and digests, path traversal, and paths outside the API.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 256)
	tag129 := strings.Repeat("t", 129)
	for _, tc := range []struct {
		name   string
		target string
		status int
		code   string
	}{
		// Names.
		{name: "upper case name", target: "/v2/Library/alpine/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "trailing slash in name", target: "/v2/library/alpine//manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "double slash in name", target: "/v2/library//alpine/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "leading slash in name", target: "/v2//library/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "empty name", target: "/v2//manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "dot dot name", target: "/v2/../manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "dot dot inside name", target: "/v2/a/../b/blobs/" + goodDigest, status: 400, code: registryapi.CodeNameInvalid},
		{name: "escaped dot dot name", target: "/v2/%2e%2e/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "escaped dot dot inside name", target: "/v2/a/%2E%2E/b/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "escaped slash in name", target: "/v2/library%2Falpine/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "256 character name", target: "/v2/" + long + "/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "name with leading separator", target: "/v2/-a/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "name with triple underscore", target: "/v2/a___b/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "name with space", target: "/v2/a%20b/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "name with NUL", target: "/v2/a%00b/manifests/latest", status: 400, code: registryapi.CodeNameInvalid},
		{name: "bad name on tags", target: "/v2/A/tags/list", status: 400, code: registryapi.CodeNameInvalid},
		{name: "bad name on referrers", target: "/v2/A/referrers/" + goodDigest, status: 400, code: registryapi.CodeNameInvalid},
		{name: "bad name on blobs", target: "/v2/A/blobs/" + goodDigest, status: 400, code: registryapi.CodeNameInvalid},

		// Traversal and paths outside the API.
		{name: "traversal from v2", target: "/v2/../../etc/passwd", status: 404, code: registryapi.CodeNameUnknown},
		{name: "escaped traversal from v2", target: "/v2/%2e%2e/%2e%2e/etc/passwd", status: 404, code: registryapi.CodeNameUnknown},
		{name: "traversal in digest", target: "/v2/a/blobs/sha256:../../x", status: 404, code: registryapi.CodeNameUnknown},
		{name: "escaped colon and dots in digest", target: "/v2/a/blobs/sha256%3A..", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "escaped slash in digest", target: "/v2/a/blobs/sha256:..%2F..%2Fx", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "traversal in tag", target: "/v2/a/manifests/../../../etc/passwd", status: 404, code: registryapi.CodeNameUnknown},
		{name: "escaped traversal in tag", target: "/v2/a/manifests/..%2F..%2Fetc", status: 400, code: registryapi.CodeManifestInvalid},
		{name: "not under v2", target: "/etc/passwd", status: 404, code: registryapi.CodeNameUnknown},
		{name: "v2 prefix without slash", target: "/v2x/a/manifests/latest", status: 404, code: registryapi.CodeNameUnknown},
		{name: "unknown endpoint", target: "/v2/a/foo", status: 404, code: registryapi.CodeNameUnknown},
		{name: "catalog", target: "/v2/_catalog", status: 404, code: registryapi.CodeNameUnknown},
		{name: "manifest without reference", target: "/v2/a/manifests/", status: 404, code: registryapi.CodeNameUnknown},
		{name: "blob without digest", target: "/v2/a/blobs/", status: 404, code: registryapi.CodeNameUnknown},
		{name: "referrers without digest", target: "/v2/a/referrers/", status: 404, code: registryapi.CodeNameUnknown},
		{name: "tags list without name", target: "/v2/tags/list", status: 404, code: registryapi.CodeNameUnknown},

		// Digests, on blobs, manifests and referrers.
		{name: "short digest", target: "/v2/a/blobs/sha256:abc", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "long digest", target: "/v2/a/blobs/" + goodDigest + "00", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "bad hex", target: "/v2/a/blobs/sha256:" + strings.Repeat("z", 64), status: 400, code: registryapi.CodeDigestInvalid},
		{name: "upper case hex", target: "/v2/a/blobs/sha256:" + strings.ToUpper(goodDigest[7:]), status: 400, code: registryapi.CodeDigestInvalid},
		{name: "unknown algorithm", target: "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "empty encoded part", target: "/v2/a/blobs/sha256:", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "empty algorithm", target: "/v2/a/blobs/:" + goodDigest[7:], status: 400, code: registryapi.CodeDigestInvalid},
		{name: "no colon", target: "/v2/a/blobs/" + goodDigest[7:], status: 400, code: registryapi.CodeDigestInvalid},
		{name: "upper case algorithm", target: "/v2/a/blobs/SHA256:" + goodDigest[7:], status: 400, code: registryapi.CodeDigestInvalid},
		{name: "sha512 with sha256 length", target: "/v2/a/blobs/sha512:" + goodDigest[7:], status: 400, code: registryapi.CodeDigestInvalid},
		{name: "bad manifest digest", target: "/v2/a/manifests/sha256:abc", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "unknown manifest algorithm", target: "/v2/a/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "empty manifest digest", target: "/v2/a/manifests/sha256:", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "bad referrers digest", target: "/v2/a/referrers/latest", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "short referrers digest", target: "/v2/a/referrers/sha256:abc", status: 400, code: registryapi.CodeDigestInvalid},

		// Tags.
		{name: "129 character tag", target: "/v2/a/manifests/" + tag129, status: 400, code: registryapi.CodeManifestInvalid},
		{name: "tag starting with dot", target: "/v2/a/manifests/.latest", status: 400, code: registryapi.CodeManifestInvalid},
		{name: "tag starting with dash", target: "/v2/a/manifests/-latest", status: 400, code: registryapi.CodeManifestInvalid},
		{name: "tag with escaped char", target: "/v2/a/manifests/la%20test", status: 400, code: registryapi.CodeManifestInvalid},
		{name: "dot dot tag", target: "/v2/a/manifests/..", status: 400, code: registryapi.CodeManifestInvalid},
	} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			t.Run(tc.name+"/"+method, func(t *testing.T) {
				t.Parallel()
				s, b, _ := newTestServer(t)
				rec := serve(s, method, tc.target, nil)
				checkError(t, rec, method, tc.status, tc.code)
				if n := b.calls.Load(); n != 0 {
					t.Errorf("backend called %d times for a bad request", n)
				}
			})
		}
	}
}

// TestGoodNames checks that names the grammar allows reach the backend, including names that
// contain an endpoint's marker.
func TestGoodNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, repo, endpoint string
	}{
		{name: "single component", repo: "alpine", endpoint: "manifests"},
		{name: "separators", repo: "a.b_c__d-e--f/g", endpoint: "manifests"},
		{name: "255 characters", repo: strings.Repeat("a", 255), endpoint: "manifests"},
		{name: "many components", repo: "a/b/c/d/e/f", endpoint: "blobs"},
		{name: "blobs inside the name of a manifest", repo: "org/blobs/app", endpoint: "manifests"},
		{name: "manifests inside the name of a blob", repo: "org/manifests/app", endpoint: "blobs"},
		{name: "referrers inside the name of a blob", repo: "org/referrers/app", endpoint: "blobs"},
		{name: "manifests inside the name of referrers", repo: "org/manifests/app", endpoint: "referrers"},
		{name: "uploads inside the name of a manifest", repo: "org/blobs/uploads/app", endpoint: "manifests"},
		{name: "tags list inside the name", repo: "org/tags/list", endpoint: "tags"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, b, f := newTestServer(t)
			var target, ref string
			switch tc.endpoint {
			case "manifests":
				target, ref = "/v2/"+tc.repo+"/manifests/"+f.manifest.String(), f.manifest.String()
			case "blobs":
				target, ref = "/v2/"+tc.repo+"/blobs/"+f.blob.String(), f.blob.String()
			case "referrers":
				target, ref = "/v2/"+tc.repo+"/referrers/"+f.manifest.String(), f.manifest.String()
			case "tags":
				f.mem.PutManifest(tc.repo, "v1", testMediaType, f.body)
				target = "/v2/" + tc.repo + "/tags/list"
			}
			rec := serve(s, http.MethodGet, target, nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s = %d %s, want 200", target, rec.Code, rec.Body)
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.target.Name != tc.repo || b.ref != ref {
				t.Errorf("backend asked for repo %q ref %q, want %q %q", b.target.Name, b.ref, tc.repo, ref)
			}
		})
	}
}

func TestUnsupportedMethods(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, method, target string
	}{
		{name: "start upload", method: http.MethodPost, target: "/v2/a/blobs/uploads/"},
		{name: "start upload without slash", method: http.MethodPost, target: "/v2/a/blobs/uploads"},
		{name: "mount", method: http.MethodPost, target: "/v2/a/blobs/uploads/?mount=" + goodDigest + "&from=b"},
		{name: "upload chunk", method: http.MethodPatch, target: "/v2/a/blobs/uploads/3f1c7a"},
		{name: "finish upload", method: http.MethodPut, target: "/v2/a/blobs/uploads/3f1c7a?digest=" + goodDigest},
		{name: "upload status", method: http.MethodGet, target: "/v2/a/blobs/uploads/3f1c7a"},
		{name: "cancel upload", method: http.MethodDelete, target: "/v2/a/blobs/uploads/3f1c7a"},
		{name: "push manifest", method: http.MethodPut, target: "/v2/a/manifests/latest"},
		{name: "delete manifest", method: http.MethodDelete, target: "/v2/a/manifests/" + goodDigest},
		{name: "delete blob", method: http.MethodDelete, target: "/v2/a/blobs/" + goodDigest},
		{name: "patch blob", method: http.MethodPatch, target: "/v2/a/blobs/" + goodDigest},
		{name: "post tags", method: http.MethodPost, target: "/v2/a/tags/list"},
		{name: "post base", method: http.MethodPost, target: "/v2/"},
		{name: "options base", method: http.MethodOptions, target: "/v2/"},
		{name: "put referrers", method: http.MethodPut, target: "/v2/a/referrers/" + goodDigest},
		{name: "unknown method", method: "BREW", target: "/v2/a/manifests/latest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, b, _ := newTestServer(t)
			rec := serve(s, tc.method, tc.target, nil)
			checkError(t, rec, tc.method, http.StatusMethodNotAllowed, registryapi.CodeUnsupported)
			if n := b.calls.Load(); n != 0 {
				t.Errorf("backend called %d times", n)
			}
		})
	}
}

// endpoints are one request of each kind that reaches the backend, for the fixture's content.
func endpoints(f *fixture) []struct{ name, method, path string } {
	return []struct{ name, method, path string }{
		{"GET manifest", http.MethodGet, "/v2/" + testRepo + "/manifests/latest"},
		{"HEAD manifest", http.MethodHead, "/v2/" + testRepo + "/manifests/latest"},
		{"GET blob", http.MethodGet, "/v2/" + testRepo + "/blobs/" + f.blob.String()},
		{"HEAD blob", http.MethodHead, "/v2/" + testRepo + "/blobs/" + f.blob.String()},
		{"GET tags", http.MethodGet, "/v2/" + testRepo + "/tags/list"},
		{"GET referrers", http.MethodGet, "/v2/" + testRepo + "/referrers/" + f.manifest.String()},
	}
}

// TestNamespaces: the server hands the client's ns to the Backend as it is (lower case), and
// refuses before the Backend an ns that is no registry host at all. Which hosts are upstreams is
// the Backend's decision (origin.Set's tests; the agent's for the refusal without I/O).
func TestNamespaces(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		query    string
		registry string // what the backend must be asked about
		refused  bool
	}{
		{name: "no ns", query: "", registry: ""},
		{name: "empty ns", query: "?ns=", registry: ""},
		{name: "host and port", query: "?ns=127.0.0.1:5001", registry: "127.0.0.1:5001"},
		{name: "docker.io", query: "?ns=docker.io", registry: "docker.io"},
		{name: "upper case", query: "?ns=DOCKER.IO", registry: "docker.io"},
		{name: "IPv6", query: "?ns=[::1]:5000", registry: "[::1]:5000"},
		{name: "ns with a path", query: "?ns=docker.io/evil", refused: true},
		{name: "ns with a scheme", query: "?ns=http://127.0.0.1:5001", refused: true},
		{name: "escaped ns", query: "?ns=evil.example.com%2F..%2F", refused: true},
		{name: "ns with userinfo", query: "?ns=user@evil.example.com", refused: true},
		{name: "ns with a bad port", query: "?ns=evil.example.com:123456", refused: true},
		{name: "ns with a space", query: "?ns=evil%20host", refused: true},
	} {
		f := newFixture()
		for _, ep := range endpoints(f) {
			t.Run(tc.name+"/"+ep.name, func(t *testing.T) {
				t.Parallel()
				s, b, _ := newTestServer(t)
				rec := serve(s, ep.method, ep.path+tc.query, nil)
				if tc.refused {
					checkError(t, rec, ep.method, http.StatusNotFound, registryapi.CodeNameUnknown)
					if n := b.calls.Load(); n != 0 {
						t.Errorf("backend called %d times for a malformed registry", n)
					}
					return
				}
				if rec.Code != http.StatusOK {
					t.Fatalf("status = %d, want 200 (body %q)", rec.Code, rec.Body)
				}
				if got := b.lastTarget(); got.Registry != tc.registry || got.Name != testRepo {
					t.Errorf("backend asked for %+v, want registry %q repo %s", got, tc.registry, testRepo)
				}
			})
		}
	}
}

func TestManifests(t *testing.T) {
	t.Parallel()
	f := newFixture()
	for _, tc := range []struct {
		name   string
		method string
		ref    string
		accept []string // Accept header values
		status int
		code   string
		// wantAccept is the list the backend must receive.
		wantAccept []string
	}{
		{name: "GET by tag", method: http.MethodGet, ref: "latest", status: 200},
		{name: "GET by digest", method: http.MethodGet, ref: f.manifest.String(), status: 200},
		{name: "HEAD by tag", method: http.MethodHead, ref: "latest", status: 200},
		{name: "HEAD by digest", method: http.MethodHead, ref: f.manifest.String(), status: 200},
		{name: "128 character tag", method: http.MethodGet, ref: strings.Repeat("t", 128), status: 404, code: registryapi.CodeManifestUnknown},
		{name: "unknown tag", method: http.MethodGet, ref: "nope", status: 404, code: registryapi.CodeManifestUnknown},
		{name: "unknown tag HEAD", method: http.MethodHead, ref: "nope", status: 404, code: registryapi.CodeManifestUnknown},
		{name: "unknown digest", method: http.MethodGet, ref: goodDigest, status: 404, code: registryapi.CodeManifestUnknown},
		{name: "blob digest is no manifest", method: http.MethodGet, ref: f.blob.String(), status: 404, code: registryapi.CodeManifestUnknown},
		{
			name: "accept list", method: http.MethodGet, ref: "latest", status: 200,
			accept: []string{
				"application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json;q=0.9",
				" application/vnd.docker.distribution.manifest.v2+json ; q=0.5 ,,",
			},
			wantAccept: []string{
				"application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
				"application/vnd.docker.distribution.manifest.v2+json",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, b, f := newTestServer(t)
			var h http.Header
			if tc.accept != nil {
				h = http.Header{"Accept": tc.accept}
			}
			rec := serve(s, tc.method, "/v2/"+testRepo+"/manifests/"+tc.ref, h)
			if tc.status != 200 {
				checkError(t, rec, tc.method, tc.status, tc.code)
				return
			}
			if rec.Code != 200 {
				t.Fatalf("status = %d (body %q)", rec.Code, rec.Body)
			}
			want := map[string]string{
				"Content-Type":          testMediaType,
				"Docker-Content-Digest": f.manifest.String(),
				"Content-Length":        strconv.Itoa(len(f.body)),
				"Etag":                  `"` + f.manifest.String() + `"`,
			}
			for k, v := range want {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			wantBody := string(f.body)
			if tc.method == http.MethodHead {
				wantBody = ""
			}
			if got := rec.Body.String(); got != wantBody {
				t.Errorf("body = %q, want %q", got, wantBody)
			}
			if tc.wantAccept != nil {
				b.mu.Lock()
				got := b.accept
				b.mu.Unlock()
				if !slices.Equal(got, tc.wantAccept) {
					t.Errorf("backend got Accept %q, want %q", got, tc.wantAccept)
				}
			}
		})
	}
}

func TestBlobs(t *testing.T) {
	t.Parallel()
	sha512Blob := []byte("sha512 content")
	sha512Digest := digest.SHA512.FromBytes(sha512Blob)
	for _, tc := range []struct {
		name   string
		method string
		dgst   string
		status int
		code   string
		body   []byte
		opens  int64 // expected OpenBlob calls
	}{
		{name: "GET", method: http.MethodGet, dgst: digest.FromBytes(testBlob).String(), status: 200, body: testBlob, opens: 1},
		{name: "HEAD stats without opening", method: http.MethodHead, dgst: digest.FromBytes(testBlob).String(), status: 200, body: testBlob},
		{name: "GET empty blob", method: http.MethodGet, dgst: digest.FromBytes(nil).String(), status: 200, body: []byte{}, opens: 1},
		{name: "GET sha512", method: http.MethodGet, dgst: sha512Digest.String(), status: 200, body: sha512Blob, opens: 1},
		{name: "HEAD sha512", method: http.MethodHead, dgst: sha512Digest.String(), status: 200, body: sha512Blob},
		{name: "GET unknown", method: http.MethodGet, dgst: goodDigest[:len(goodDigest)-1] + "0", status: 404, code: registryapi.CodeBlobUnknown, opens: 1},
		{name: "HEAD unknown", method: http.MethodHead, dgst: goodDigest[:len(goodDigest)-1] + "0", status: 404, code: registryapi.CodeBlobUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, b, f := newTestServer(t)
			f.mem.PutBlob(nil)
			f.mem.PutBlobAs(sha512Digest, sha512Blob)
			rec := serve(s, tc.method, "/v2/"+testRepo+"/blobs/"+tc.dgst, nil)
			if n := b.opens.Load(); n != tc.opens {
				t.Errorf("OpenBlob called %d times, want %d", n, tc.opens)
			}
			if tc.status != 200 {
				checkError(t, rec, tc.method, tc.status, tc.code)
				return
			}
			if rec.Code != 200 {
				t.Fatalf("status = %d (body %q)", rec.Code, rec.Body)
			}
			want := map[string]string{
				"Content-Type":          "application/octet-stream",
				"Docker-Content-Digest": tc.dgst,
				"Content-Length":        strconv.Itoa(len(tc.body)),
				"Accept-Ranges":         "bytes",
				"Content-Range":         "",
			}
			for k, v := range want {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			wantBody := string(tc.body)
			if tc.method == http.MethodHead {
				wantBody = ""
			}
			if got := rec.Body.String(); got != wantBody {
				t.Errorf("body = %q, want %q", got, wantBody)
			}
		})
	}
}

// TestBackendErrors checks that every error class becomes its OCI error, and that the text of
// the backend's error never reaches the client.
func TestBackendErrors(t *testing.T) {
	t.Parallel()
	wrap := func(e error) error { return fmt.Errorf("fetching from %s: %w", leakMarker, e) }
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string // "" means the code depends on the endpoint (not found)
	}{
		{name: "not found", err: wrap(errdefs.ErrNotFound), status: 404},
		{name: "unavailable", err: wrap(errdefs.ErrUnavailable), status: 503, code: registryapi.CodeUnavailable},
		{name: "deadline", err: wrap(context.DeadlineExceeded), status: 503, code: registryapi.CodeUnavailable},
		{name: "too many requests", err: wrap(errdefs.ErrTooManyRequests), status: 429, code: registryapi.CodeTooManyRequests},
		{name: "denied", err: wrap(errdefs.ErrDenied), status: 403, code: registryapi.CodeDenied},
		{name: "too large", err: wrap(errdefs.ErrTooLarge), status: 502, code: registryapi.CodeManifestInvalid},
		{name: "digest mismatch", err: wrap(errdefs.ErrDigestMismatch), status: 502, code: registryapi.CodeDigestInvalid},
		{name: "not configured", err: wrap(errdefs.ErrNotConfigured), status: 404, code: registryapi.CodeNameUnknown},
		{name: "invalid", err: wrap(errdefs.ErrInvalid), status: 400},
		{name: "unsupported", err: wrap(errdefs.ErrUnsupported), status: 405, code: registryapi.CodeUnsupported},
		{name: "unknown error", err: errors.New(leakMarker), status: 500, code: registryapi.CodeUnknown},
		{name: "joined unknown errors", err: errors.Join(errors.New(leakMarker), io.ErrUnexpectedEOF), status: 500, code: registryapi.CodeUnknown},
		{name: "OCI error passes as is", err: fmt.Errorf("x: %w", &registryapi.Error{Status: 401, Code: registryapi.CodeUnauthorized, Message: "authentication required"}), status: 401, code: registryapi.CodeUnauthorized},
	} {
		f := newFixture()
		notFound := map[string]string{
			"GET manifest": registryapi.CodeManifestUnknown, "HEAD manifest": registryapi.CodeManifestUnknown,
			"GET blob": registryapi.CodeBlobUnknown, "HEAD blob": registryapi.CodeBlobUnknown,
			"GET tags": registryapi.CodeNameUnknown, "GET referrers": registryapi.CodeManifestUnknown,
		}
		for _, ep := range endpoints(f) {
			t.Run(tc.name+"/"+ep.name, func(t *testing.T) {
				t.Parallel()
				s, b, _ := newTestServer(t)
				b.err = tc.err
				rec := serve(s, ep.method, ep.path, nil)
				code := tc.code
				if tc.status == 404 && code == "" {
					code = notFound[ep.name]
				}
				checkError(t, rec, ep.method, tc.status, code)
				if b.calls.Load() != 1 {
					t.Errorf("backend called %d times, want 1", b.calls.Load())
				}
			})
		}
	}
}

// failingBlob sends half of its content, then fails as a blob that failed verification would.
type failingBlob struct {
	content []byte
	size    int64 // what Size reports: len(content) or -1
	sent    int   // bytes to send before failing
	closed  chan struct{}
}

func (b *failingBlob) Size() int64    { return b.size }
func (b *failingBlob) Source() string { return "test" }
func (b *failingBlob) Close() error   { close(b.closed); return nil }
func (b *failingBlob) CopyRange(_ context.Context, w io.Writer, off, _ int64) (int64, error) {
	n, err := w.Write(b.content[off:b.sent])
	if err != nil {
		return int64(n), err
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	return int64(n), fmt.Errorf("chunk 3 from %s: %w", leakMarker, errdefs.ErrDigestMismatch)
}

// TestBlobAbort checks that a blob failing mid-stream breaks the response, so that the client
// can't mistake a short body for the whole blob, over a real connection.
func TestBlobAbort(t *testing.T) {
	t.Parallel()
	content := []byte(strings.Repeat("0123456789", 10000))
	for _, tc := range []struct {
		name   string
		size   int64
		sent   int
		header http.Header
	}{
		{name: "known size, fails midway", size: int64(len(content)), sent: len(content) / 2},
		{name: "known size, fails before the first byte", size: int64(len(content)), sent: 0},
		{name: "known size, fails at the last byte", size: int64(len(content)), sent: len(content) - 1},
		{name: "unknown size, fails midway", size: -1, sent: len(content) / 2},
		{name: "range, fails midway", size: int64(len(content)), sent: 1000, header: http.Header{"Range": {"bytes=10-"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture()
			blob := &failingBlob{content: content, size: tc.size, sent: tc.sent, closed: make(chan struct{})}
			srv := httptest.NewServer(registryapi.New(&recordingBackend{Backend: f.mem, blob: blob}))
			defer srv.Close()
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/v2/a/blobs/"+digest.FromBytes(content).String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				// The server may break the connection before the headers arrive.
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil {
				t.Fatalf("read %d bytes of a failed blob without error (status %d, Content-Length %d)", len(body), resp.StatusCode, resp.ContentLength)
			}
			if resp.ContentLength >= 0 && int64(len(body)) >= resp.ContentLength {
				t.Errorf("read %d bytes, Content-Length %d: the response looks whole", len(body), resp.ContentLength)
			}
			if resp.ContentLength >= 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("read error = %v, want unexpected EOF", err)
			}
			checkNoLeaks(t, string(body))
			<-blob.closed // the server closes the blob even when it aborts
		})
	}
}

// cancelBlob fails the way a blob does when its client went away.
type cancelBlob struct{ registrytest.Blob }

func (cancelBlob) CopyRange(ctx context.Context, _ io.Writer, _, _ int64) (int64, error) {
	return 0, ctx.Err()
}

// TestClientGone checks that a client going away ends the handler quietly: no abort panic.
func TestClientGone(t *testing.T) {
	t.Parallel()
	f := newFixture()
	s := registryapi.New(&recordingBackend{Backend: f.mem, blob: cancelBlob{registrytest.Blob(testBlob)}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v2/a/blobs/"+f.blob.String(), nil)
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("handler panicked for a client that went away: %v", p)
		}
	}()
	s.ServeHTTP(httptest.NewRecorder(), r)
}

func TestTags(t *testing.T) {
	t.Parallel()
	link := `</v2/library/alpine/tags/list?last=b&n=2>; rel="next"`
	for _, tc := range []struct {
		name     string
		method   string
		query    string
		answer   *registryapi.Listing // nil: the registrytest.Backend's
		status   int
		code     string // for errors made by the server
		wantN    int
		wantLast string
		wantLink string
		wantBody string
	}{
		{name: "no parameters", method: http.MethodGet, status: 200, wantBody: `{"name":"library/alpine","tags":["a","b","c","latest"]}`},
		{name: "n", method: http.MethodGet, query: "?n=2", status: 200, wantN: 2,
			wantLink: `</v2/library/alpine/tags/list?last=b&n=2>; rel="next"`, wantBody: `{"name":"library/alpine","tags":["a","b"]}`},
		{name: "n and last", method: http.MethodGet, query: "?n=2&last=b", status: 200, wantN: 2, wantLast: "b",
			wantBody: `{"name":"library/alpine","tags":["c","latest"]}`},
		{name: "n zero", method: http.MethodGet, query: "?n=0", status: 200, wantN: 0},
		{name: "n capped", method: http.MethodGet, query: "?n=1000000", status: 200, wantN: registryapi.MaxTagsPage},
		{name: "n negative", method: http.MethodGet, query: "?n=-1", status: 400, code: registryapi.CodeUnsupported},
		{name: "n not a number", method: http.MethodGet, query: "?n=ten", status: 400, code: registryapi.CodeUnsupported},
		{name: "n overflows", method: http.MethodGet, query: "?n=99999999999999999999999", status: 400, code: registryapi.CodeUnsupported},
		{name: "n fraction", method: http.MethodGet, query: "?n=1.5", status: 400, code: registryapi.CodeUnsupported},
		{name: "last not a tag", method: http.MethodGet, query: "?last=.x", status: 400, code: registryapi.CodeUnsupported},
		{name: "last too long", method: http.MethodGet, query: "?last=" + strings.Repeat("t", 129), status: 400, code: registryapi.CodeUnsupported},
		{name: "last with slash", method: http.MethodGet, query: "?last=..%2F..%2Fx", status: 400, code: registryapi.CodeUnsupported},
		{name: "bad n on HEAD", method: http.MethodHead, query: "?n=x", status: 400, code: registryapi.CodeUnsupported},
		{
			name: "origin page passes through", method: http.MethodGet, status: 200,
			answer:   &registryapi.Listing{Status: 200, ContentType: "application/json", Link: link, Body: []byte(`{"name":"library/alpine","tags":["a","b"]}`)},
			wantLink: link, wantBody: `{"name":"library/alpine","tags":["a","b"]}`,
		},
		{
			name: "origin 404 passes through", method: http.MethodGet, status: 404,
			answer:   &registryapi.Listing{Status: 404, ContentType: "application/json", Body: []byte(`{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`)},
			wantBody: `{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`,
		},
		{
			name: "HEAD has no body", method: http.MethodHead, status: 200,
			answer:   &registryapi.Listing{Status: 200, ContentType: "application/json", Link: link, Body: []byte(`{"tags":[]}`)},
			wantLink: link,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, b, f := newTestServer(t)
			for _, tag := range []string{"a", "b", "c"} {
				f.mem.PutManifest(testRepo, tag, testMediaType, f.body)
			}
			b.tags = tc.answer
			rec := serve(s, tc.method, "/v2/"+testRepo+"/tags/list"+tc.query, nil)
			if tc.code != "" {
				checkError(t, rec, tc.method, tc.status, tc.code)
				if n := b.calls.Load(); n != 0 {
					t.Errorf("backend called %d times for bad parameters", n)
				}
				return
			}
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d (body %q)", rec.Code, tc.status, rec.Body)
			}
			b.mu.Lock()
			gotN, gotLast := b.n, b.last
			b.mu.Unlock()
			if gotN != tc.wantN || gotLast != tc.wantLast {
				t.Errorf("backend got n=%d last=%q, want n=%d last=%q", gotN, gotLast, tc.wantN, tc.wantLast)
			}
			if got := rec.Header().Get("Link"); got != tc.wantLink {
				t.Errorf("Link = %q, want %q", got, tc.wantLink)
			}
			if tc.wantBody != "" || tc.method == http.MethodHead {
				if got := rec.Body.String(); got != tc.wantBody {
					t.Errorf("body = %q, want %q", got, tc.wantBody)
				}
			}
			if tc.method == http.MethodGet {
				if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(rec.Body.Len()) {
					t.Errorf("Content-Length = %s for %d bytes", cl, rec.Body.Len())
				}
			}
		})
	}
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	const index = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
	for _, tc := range []struct {
		name             string
		query            string
		answer           *registryapi.Listing
		status           int
		wantType         string
		wantArtifactType string
		wantBody         string
	}{
		{name: "memory index", status: 200, wantType: "application/vnd.oci.image.index.v1+json", wantBody: index},
		{name: "artifact type is passed on", query: "?artifactType=application/vnd.example.sbom", status: 200,
			wantType: "application/vnd.oci.image.index.v1+json", wantArtifactType: "application/vnd.example.sbom", wantBody: index},
		{
			name: "origin without referrers API", status: 404,
			answer:   &registryapi.Listing{Status: 404, ContentType: "application/json", Body: []byte(`{"errors":[{"code":"NAME_UNKNOWN","message":"x"}]}`)},
			wantType: "application/json", wantBody: `{"errors":[{"code":"NAME_UNKNOWN","message":"x"}]}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, b, f := newTestServer(t)
			b.referrers = tc.answer
			rec := serve(s, http.MethodGet, "/v2/"+testRepo+"/referrers/"+f.manifest.String()+tc.query, nil)
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d (body %q)", rec.Code, tc.status, rec.Body)
			}
			if got := rec.Header().Get("Content-Type"); got != tc.wantType {
				t.Errorf("Content-Type = %q, want %q", got, tc.wantType)
			}
			if got := rec.Body.String(); got != tc.wantBody {
				t.Errorf("body = %q, want %q", got, tc.wantBody)
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.artifactType != tc.wantArtifactType || b.ref != f.manifest.String() {
				t.Errorf("backend got subject %q artifactType %q", b.ref, b.artifactType)
			}
		})
	}
}

// unknownSizeBlob is a blob still arriving from an origin that sent no length.
type unknownSizeBlob struct{ registrytest.Blob }

func (unknownSizeBlob) Size() int64 { return -1 }

func TestBlobUnknownSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		method string
		rng    string
		status int
		body   string
	}{
		{name: "GET streams without a length", method: http.MethodGet, status: 200, body: string(testBlob)},
		{name: "HEAD has no length", method: http.MethodHead, status: 200},
		{name: "range needs the size", method: http.MethodGet, rng: "bytes=0-1", status: 416},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture()
			s := registryapi.New(&recordingBackend{Backend: f.mem, blob: unknownSizeBlob{registrytest.Blob(testBlob)}})
			var h http.Header
			if tc.rng != "" {
				h = http.Header{"Range": {tc.rng}}
			}
			rec := serve(s, tc.method, "/v2/a/blobs/"+f.blob.String(), h)
			if tc.status == 416 {
				checkError(t, rec, tc.method, tc.status, registryapi.CodeRangeInvalid)
				if cr := rec.Header().Get("Content-Range"); cr != "" {
					t.Errorf("Content-Range = %q for a blob of unknown size", cr)
				}
				return
			}
			if rec.Code != tc.status {
				t.Fatalf("status = %d (body %q)", rec.Code, rec.Body)
			}
			if cl, ok := rec.Header()["Content-Length"]; ok {
				t.Errorf("Content-Length = %q for a blob of unknown size", cl)
			}
			if got := rec.Body.String(); got != tc.body {
				t.Errorf("body = %q, want %q", got, tc.body)
			}
		})
	}
}

// TestOverTheWire sends hostile request lines byte for byte through a real HTTP server, so that
// nothing on the client side can clean the path first.
func TestOverTheWire(t *testing.T) {
	t.Parallel()
	s, b, _ := newTestServer(t)
	srv := httptest.NewServer(s)
	defer srv.Close()
	for _, tc := range []struct {
		name   string
		line   string
		status int
		code   string
	}{
		{name: "traversal", line: "GET /v2/../../etc/passwd HTTP/1.1", status: 404, code: registryapi.CodeNameUnknown},
		{name: "traversal in digest", line: "GET /v2/a/blobs/sha256:../../x HTTP/1.1", status: 404, code: registryapi.CodeNameUnknown},
		{name: "escaped colon", line: "GET /v2/a/blobs/sha256%3A.. HTTP/1.1", status: 400, code: registryapi.CodeDigestInvalid},
		{name: "escaped dots", line: "GET /v2/%2e%2e/%2e%2e/manifests/latest HTTP/1.1", status: 400, code: registryapi.CodeNameInvalid},
		{name: "escaped slash", line: "GET /v2/a%2F..%2F..%2Fb/manifests/latest HTTP/1.1", status: 400, code: registryapi.CodeNameInvalid},
		{name: "absolute form", line: "GET http://evil.example.com/v2/../x HTTP/1.1", status: 404, code: registryapi.CodeNameUnknown},
		{name: "upload", line: "POST /v2/a/blobs/uploads/ HTTP/1.1", status: 405, code: registryapi.CodeUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tc.line+"\r\nHost: mirror\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			rec := httptest.NewRecorder()
			rec.Code = resp.StatusCode
			maps.Copy(rec.Header(), resp.Header)
			if _, err := io.Copy(rec.Body, resp.Body); err != nil {
				t.Fatal(err)
			}
			checkError(t, rec, http.MethodGet, tc.status, tc.code)
		})
	}
	if n := b.calls.Load(); n != 0 {
		t.Errorf("backend called %d times", n)
	}
}

// TestBlobRanges checks Range requests end to end through the handler against a 20-byte blob.
func TestBlobRanges(t *testing.T) {
	t.Parallel()
	size := strconv.Itoa(len(testBlob))
	for _, tc := range []struct {
		name         string
		method       string
		header       string
		status       int
		contentRange string
		body         string
	}{
		{name: "no range", header: "", status: 200, body: string(testBlob)},
		{name: "first ten", header: "bytes=0-9", status: 206, contentRange: "bytes 0-9/20", body: "0123456789"},
		{name: "open ended", header: "bytes=5-", status: 206, contentRange: "bytes 5-19/20", body: "56789abcdefghij"},
		{name: "suffix", header: "bytes=-3", status: 206, contentRange: "bytes 17-19/20", body: "hij"},
		{name: "suffix longer than the blob", header: "bytes=-30", status: 206, contentRange: "bytes 0-19/20", body: string(testBlob)},
		{name: "end clamped", header: "bytes=10-100", status: 206, contentRange: "bytes 10-19/20", body: "abcdefghij"},
		{name: "last byte", header: "bytes=19-19", status: 206, contentRange: "bytes 19-19/20", body: "j"},
		{name: "start at size", header: "bytes=20-", status: 416, contentRange: "bytes */20"},
		{name: "start beyond size", header: "bytes=1000-", status: 416, contentRange: "bytes */20"},
		{name: "multiple ranges", header: "bytes=0-1,3-4", status: 416, contentRange: "bytes */20"},
		{name: "garbage", header: "bytes=a-b", status: 416, contentRange: "bytes */20"},
		{name: "other unit", header: "items=0-1", status: 416, contentRange: "bytes */20"},
		{name: "reversed", header: "bytes=5-2", status: 416, contentRange: "bytes */20"},
		{name: "range ignored on HEAD", method: http.MethodHead, header: "bytes=0-9", status: 200},
		{name: "bad range ignored on HEAD", method: http.MethodHead, header: "bytes=a-b", status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _, f := newTestServer(t)
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			var h http.Header
			if tc.header != "" {
				h = http.Header{"Range": {tc.header}}
			}
			rec := serve(s, method, "/v2/"+testRepo+"/blobs/"+f.blob.String(), h)
			if got := rec.Header().Get("Content-Range"); got != tc.contentRange {
				t.Errorf("Content-Range = %q, want %q", got, tc.contentRange)
			}
			if tc.status == http.StatusRequestedRangeNotSatisfiable {
				checkError(t, rec, method, tc.status, registryapi.CodeRangeInvalid)
				return
			}
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d (body %q)", rec.Code, tc.status, rec.Body)
			}
			wantLen := strconv.Itoa(len(tc.body))
			if method == http.MethodHead {
				wantLen = size
			}
			if got := rec.Header().Get("Content-Length"); got != wantLen {
				t.Errorf("Content-Length = %q, want %q", got, wantLen)
			}
			if got := rec.Body.String(); got != tc.body {
				t.Errorf("body = %q, want %q", got, tc.body)
			}
			if got := rec.Header().Get("Accept-Ranges"); got != "bytes" {
				t.Errorf("Accept-Ranges = %q", got)
			}
		})
	}
}
