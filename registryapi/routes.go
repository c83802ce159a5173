package registryapi

import (
	"net/http"
	"strings"
)

// endpoint kinds, used for routing and as the metrics label.
const (
	epBase      = "base"
	epManifest  = "manifest"
	epBlob      = "blob"
	epUpload    = "upload"
	epTags      = "tags"
	epReferrers = "referrers"
	epOther     = "other"
)

// route is a parsed /v2 request path.
type route struct {
	kind string
	name string
	// ref is the manifest reference, blob digest, referrers subject, or upload id.
	ref string
}

// parseRoute splits a /v2 path. Repository names contain slashes, so the path is split at the
// last endpoint marker. It works on the escaped path: names, tags and digests never contain
// percent signs, so an escaped slash or dot can't smuggle a path segment past validation.
func parseRoute(r *http.Request) (route, *Error) {
	p := r.URL.EscapedPath()
	if p == "/v2" || p == "/v2/" {
		return route{kind: epBase}, nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return route{kind: epOther}, newError(http.StatusNotFound, CodeNameUnknown, "not an OCI distribution endpoint")
	}
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return checkName(route{kind: epTags, name: name})
	}
	markers := []struct{ sep, kind string }{
		{"/blobs/uploads/", epUpload},
		{"/manifests/", epManifest},
		{"/referrers/", epReferrers},
		{"/blobs/", epBlob},
	}
	for _, m := range markers {
		if i := strings.LastIndex(rest, m.sep); i >= 0 {
			rt := route{kind: m.kind, name: rest[:i], ref: rest[i+len(m.sep):]}
			if strings.Contains(rt.ref, "/") {
				// References never contain a slash: this marker is part of the name (as in
				// "org/manifests/app/blobs/<digest>"), so try the others.
				continue
			}
			if rt.ref == "" && m.kind != epUpload {
				return route{kind: m.kind}, newError(http.StatusNotFound, CodeNameUnknown, "not an OCI distribution endpoint")
			}
			return checkName(rt)
		}
	}
	if name, ok := strings.CutSuffix(rest, "/blobs/uploads"); ok {
		return checkName(route{kind: epUpload, name: name})
	}
	return route{kind: epOther}, newError(http.StatusNotFound, CodeNameUnknown, "not an OCI distribution endpoint")
}

func checkName(rt route) (route, *Error) {
	return rt, validateName(rt.name)
}
