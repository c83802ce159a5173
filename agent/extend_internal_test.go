package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The admin check: a token when one is configured (bearer, or basic auth's password), else
// loopback only; pulls never need it.
func TestAdminAllowed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		token   string
		exposed bool
		auth    func(r *http.Request)
		want    bool
	}{
		{"loopback, no token configured", "", false, nil, true},
		{"exposed, no token configured", "", true, nil, false},
		{"token missing", "s3cret", false, nil, false},
		{"bearer", "s3cret", true, func(r *http.Request) { r.Header.Set("Authorization", "Bearer s3cret") }, true},
		{"wrong bearer", "s3cret", true, func(r *http.Request) { r.Header.Set("Authorization", "Bearer s3cre") }, false},
		{"basic password", "s3cret", true, func(r *http.Request) { r.SetBasicAuth("anyone", "s3cret") }, true},
		{"basic wrong", "s3cret", true, func(r *http.Request) { r.SetBasicAuth("s3cret", "nope") }, false},
	} {
		a := &Agent{cfg: Config{AdminToken: tc.token}, exposed: tc.exposed}
		r := httptest.NewRequest("POST", "/shoal/v1/preheat", strings.NewReader("{}"))
		if tc.auth != nil {
			tc.auth(r)
		}
		if got, why := a.adminAllowed(r); got != tc.want {
			t.Errorf("%s: allowed = %v (%s), want %v", tc.name, got, why, tc.want)
		}
	}
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/v2/a/b/manifests/latest", false},
		{"HEAD", "/v2/a/b/blobs/sha256:00", false},
		{"GET", "/metrics", false},
		{"PUT", "/v2/a/b/manifests/latest", true},
		{"POST", "/v2/a/b/blobs/uploads/", true},
		{"GET", "/v2/a/b/blobs/uploads/123", true},
		{"DELETE", "/v2/a/b/manifests/sha256:00", true},
		{"GET", "/shoal/v1/pins", true},
		{"GET", "/shoal/v1/status", false},
		{"POST", "/shoal/v1/status", true},
	} {
		if got := isAdminRequest(httptest.NewRequest(tc.method, tc.path, nil)); got != tc.want {
			t.Errorf("%s %s: admin = %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
}
