package oci

import (
	"slices"
	"strings"
)

// NormalizeAccept reduces a client's Accept list to the manifest types Shoal knows, in one
// order, without repeats: the set a tag is resolved and recorded for. Parameters and case are
// dropped; a wildcard (*/* or application/*) or a list naming no known type means any type and
// gives nil. So however many distinct Accept headers clients send, a tag has at most one record
// per subset of ManifestTypes, and the origin is asked at most that many ways.
func NormalizeAccept(accept []string) []string {
	var out []string
	for _, a := range accept {
		mt, _, _ := strings.Cut(a, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
		if mt == "*/*" || mt == "application/*" {
			return nil
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
