package oci

import (
	"slices"
	"strings"
)

// NormalizeAccept reduces a client's Accept list to the manifest types Shoal knows, in one
// order, without repeats: the set a tag is resolved and recorded for, and the Accept list the
// origin is asked with. Parameters, case and unknown types are dropped; a wildcard (*/* or
// application/*) stands for every known type (ManifestTypes), so that the origin is asked for
// them by name: a registry asked with a bare wildcard may convert a manifest to an older form,
// as distribution does to schema 1. A list naming no known type and no wildcard gives nil (no
// Accept). So however many distinct Accept headers clients send, a tag has at most one record
// per subset of ManifestTypes (16 with the empty one), and the origin is asked at most that many
// ways.
func NormalizeAccept(accept []string) []string {
	var out []string
	for _, a := range accept {
		mt, _, _ := strings.Cut(a, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
		if mt == "*/*" || mt == "application/*" {
			return ManifestTypes()
		}
		if IsManifestType(mt) && !slices.Contains(out, mt) {
			out = append(out, mt)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		return slices.Index(manifestTypes, a) - slices.Index(manifestTypes, b)
	})
	return out
}
