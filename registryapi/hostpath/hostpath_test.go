package hostpath

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The server sees the escaped path (registryapi's parseRoute), so that is what is checked.
func TestRoute(t *testing.T) {
	t.Parallel()
	known := func(h string) bool {
		switch h {
		case "ghcr.io", "docker.io", "localhost", "localhost:5000", "127.0.0.1:5001", "registry":
			return true
		}
		return false
	}
	for _, tc := range []struct {
		name, method, target string
		wantPath, wantNS     string
	}{
		{name: "prefix", target: "/v2/ghcr.io/org/app/manifests/v1", wantPath: "/v2/org/app/manifests/v1", wantNS: "ghcr.io"},
		{name: "prefix upper case", target: "/v2/GHCR.IO/org/app/blobs/sha256:ab", wantPath: "/v2/org/app/blobs/sha256:ab", wantNS: "ghcr.io"},
		{name: "host and port", target: "/v2/127.0.0.1:5001/app/tags/list", wantPath: "/v2/app/tags/list", wantNS: "127.0.0.1:5001"},
		{name: "host_port, as CRI-O writes a port", target: "/v2/127.0.0.1_5001/app/manifests/v1", wantPath: "/v2/app/manifests/v1", wantNS: "127.0.0.1:5001"},
		{name: "host_port not served", target: "/v2/127.0.0.1_5002/app/manifests/v1", wantPath: "/v2/127.0.0.1_5002/app/manifests/v1"},
		{name: "localhost", target: "/v2/localhost/app/manifests/v1", wantPath: "/v2/app/manifests/v1", wantNS: "localhost"},
		{name: "referrers", target: "/v2/docker.io/library/app/referrers/sha256:ab", wantPath: "/v2/library/app/referrers/sha256:ab", wantNS: "docker.io"},
		{name: "head", method: http.MethodHead, target: "/v2/ghcr.io/org/app/manifests/v1", wantPath: "/v2/org/app/manifests/v1", wantNS: "ghcr.io"},
		{name: "not served", target: "/v2/quay.io/org/app/manifests/v1", wantPath: "/v2/quay.io/org/app/manifests/v1"},
		{name: "served but no dot, colon or localhost", target: "/v2/registry/app/manifests/v1", wantPath: "/v2/registry/app/manifests/v1"},
		{name: "no repository after the prefix", target: "/v2/ghcr.io/manifests/v1", wantPath: "/v2/ghcr.io/manifests/v1"},
		{name: "no repository before tags", target: "/v2/ghcr.io/tags/list", wantPath: "/v2/ghcr.io/tags/list"},
		{name: "repository named like an endpoint", target: "/v2/ghcr.io/manifests/x/manifests/v1", wantPath: "/v2/manifests/x/manifests/v1", wantNS: "ghcr.io"},
		{name: "ns wins", target: "/v2/ghcr.io/org/app/manifests/v1?ns=docker.io", wantPath: "/v2/ghcr.io/org/app/manifests/v1", wantNS: "docker.io"},
		{name: "ns agrees", target: "/v2/ghcr.io/org/app/manifests/v1?ns=GHCR.io", wantPath: "/v2/org/app/manifests/v1", wantNS: "GHCR.io"},
		{name: "ns is another docker hub spelling", target: "/v2/docker.io/library/app/manifests/v1?ns=index.docker.io", wantPath: "/v2/library/app/manifests/v1", wantNS: "index.docker.io"},
		{name: "push untouched", method: http.MethodPut, target: "/v2/ghcr.io/org/app/manifests/v1", wantPath: "/v2/ghcr.io/org/app/manifests/v1"},
		{name: "upload status untouched", target: "/v2/ghcr.io/org/app/blobs/uploads/abc", wantPath: "/v2/ghcr.io/org/app/blobs/uploads/abc"},
		{name: "base", target: "/v2/", wantPath: "/v2/"},
		{name: "escaped slash stays escaped", target: "/v2/ghcr.io/org%2Fapp/manifests/v1", wantPath: "/v2/org%2Fapp/manifests/v1", wantNS: "ghcr.io"},
		{name: "escaped prefix is not a prefix", target: "/v2/ghcr%2Eio/app/manifests/v1", wantPath: "/v2/ghcr%2Eio/app/manifests/v1"},
		{name: "not /v2", target: "/metrics", wantPath: "/metrics"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got *http.Request
			h := Route(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r }), known)
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, tc.target, nil))
			if got.URL.EscapedPath() != tc.wantPath || got.URL.Query().Get("ns") != tc.wantNS {
				t.Errorf("%s %s reached the server as path %q, ns %q; want %q, %q", method, tc.target, got.URL.EscapedPath(), got.URL.Query().Get("ns"), tc.wantPath, tc.wantNS)
			}
		})
	}
}

// A routed listing's pagination links keep the prefix, so a client following them stays on the
// registry it asked; other answers' headers are left alone.
func TestRouteLinks(t *testing.T) {
	t.Parallel()
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Link", `</v2/org/app/tags/list?last=b&n=2>; rel="next"`)
		_, _ = w.Write([]byte("{}"))
	})
	h := Route(next, func(h string) bool { return h == "ghcr.io" })
	for target, want := range map[string]string{
		"/v2/ghcr.io/org/app/tags/list?n=2":            `</v2/ghcr.io/org/app/tags/list?last=b&n=2>; rel="next"`,
		"/v2/ghcr.io/org/app/tags/list?n=2&ns=ghcr.io": `</v2/ghcr.io/org/app/tags/list?last=b&n=2>; rel="next"`,
		"/v2/org/app/tags/list?n=2":                    `</v2/org/app/tags/list?last=b&n=2>; rel="next"`,
		"/v2/ghcr.io/org/app/manifests/v1":             `</v2/org/app/tags/list?last=b&n=2>; rel="next"`,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if got := rec.Header().Get("Link"); got != want {
			t.Errorf("GET %s: Link %q, want %q", target, got, want)
		}
	}
}
