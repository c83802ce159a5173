// Package hostpath lets one mirror serve several registries to clients that send no ns
// parameter (CRI-O, podman, skopeo): a mirror location "127.0.0.1:5000/ghcr.io" makes them ask for
// /v2/ghcr.io/<repo>/..., and Route turns that into /v2/<repo>/...?ns=ghcr.io before the /v2
// server sees it, so the server and its Backend know one way of naming a registry.
//
// The rule, for GET and HEAD requests (pulls; a push names its repository by path alone):
//   - The first component of the repository path is a registry prefix when it looks like a host
//     by docker's reference rules (it contains a dot or a colon, or is "localhost") and the
//     mirror serves a registry of that name (Known). The rest of the path is the repository.
//   - ns wins: with ns given, the path is the repository as it stands, except that a first
//     component naming the same registry as ns is dropped (containerd's override_path mirrors
//     send both).
//   - A repository of the default registry (no ns, no prefix) whose own first component is the
//     name of a served registry cannot be reached without a prefix: ask for it as
//     /v2/<default registry>/<repository>, or with ns.
package hostpath

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/internal/reference"
)

// Known reports whether the mirror serves the registry named host (host[:port], lower case).
// It must not do I/O: it runs on every pull request.
type Known func(host string) bool

// Route returns next behind the path-prefix rule above. The pagination links of a routed
// listing (tags, referrers) get the prefix back, so that a client following them stays on the
// registry it asked.
func Route(next http.Handler, known Known) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			var prefix string
			if r, prefix = rewrite(r, known); prefix != "" && isListing(r.URL.Path) {
				w = &linkWriter{ResponseWriter: w, prefix: prefix}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// rewrite returns r with the registry prefix moved from its path to ns, and the prefix as it was
// written; or r itself and "".
func rewrite(r *http.Request, known Known) (*http.Request, string) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v2/")
	if !ok {
		return r, ""
	}
	first, repoPath, ok := strings.Cut(rest, "/")
	if !ok || !namesRepository(repoPath) {
		return r, ""
	}
	host := strings.ToLower(first)
	if !looksLikeHost(host) || !known(host) {
		// A host with a port is written host_port (names.PathPrefix): a repository name allows
		// no colon, so that is how CRI-O and skopeo can name 127.0.0.1:5001.
		h, ok := names.HostFromPathPrefix(host)
		if !ok || h == host || !known(h) {
			return r, ""
		}
		host = h
	}
	q := r.URL.Query()
	if ns := q.Get("ns"); ns != "" {
		if reference.CanonicalHost(ns) != reference.CanonicalHost(host) {
			return r, ""
		}
	} else {
		q.Set("ns", host)
	}
	raw := "/v2/" + repoPath
	p, err := url.PathUnescape(raw)
	if err != nil {
		return r, ""
	}
	r = r.Clone(r.Context())
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = p, raw, q.Encode()
	r.RequestURI = r.URL.RequestURI()
	return r, first
}

func isListing(path string) bool {
	return strings.HasSuffix(path, "/tags/list") || strings.Contains(path, "/referrers/")
}

// linkWriter puts the registry prefix back into the relative /v2 links of a Link header.
type linkWriter struct {
	http.ResponseWriter
	prefix string
	fixed  bool
}

func (w *linkWriter) fix() {
	if w.fixed {
		return
	}
	w.fixed = true
	if l := w.Header().Get("Link"); l != "" {
		w.Header().Set("Link", strings.ReplaceAll(l, "</v2/", "</v2/"+w.prefix+"/"))
	}
}

func (w *linkWriter) WriteHeader(code int) { w.fix(); w.ResponseWriter.WriteHeader(code) }

func (w *linkWriter) Write(p []byte) (int, error) { w.fix(); return w.ResponseWriter.Write(p) }

// namesRepository reports whether a path after /v2/ still names a repository before its endpoint (so that
// /v2/ghcr.io/manifests/v1 stays the repository "ghcr.io"), and is not an upload.
func namesRepository(path string) bool {
	if strings.Contains(path, "/blobs/uploads") {
		return false
	}
	for _, m := range []string{"/manifests/", "/blobs/", "/referrers/"} {
		if strings.Contains(path, m) {
			return true
		}
	}
	return strings.HasSuffix(path, "/tags/list")
}

// looksLikeHost is docker's test for a reference's first component being a registry: a dot, a
// colon, or "localhost".
func looksLikeHost(s string) bool {
	return names.ValidRegistryHost(s) && (strings.ContainsAny(s, ".:") || s == "localhost")
}
