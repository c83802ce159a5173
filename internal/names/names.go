// Package names holds the OCI distribution spec's grammar for repository names and tags, the one
// definition that the HTTP edge, the origin client and the peer protocol all check input against.
package names

import "regexp"

// MaxRepositoryLength bounds a repository name. The spec lets registries limit names; 255 leaves
// room for the host part of a reference, as in distribution.
const MaxRepositoryLength = 255

var (
	repoRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	// hostRE is a registry host as clients name it: a DNS name or IPv4 address, or a bracketed
	// IPv6 address, with an optional port. Nothing else (no scheme, path or userinfo).
	hostRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$`)
)

// ValidRegistryHost reports whether s names a registry as host[:port], the form of containerd's
// ns parameter and of the first component of an image reference.
func ValidRegistryHost(s string) bool { return len(s) <= 255 && hostRE.MatchString(s) }

// ValidRepository reports whether s is a repository name by the spec's grammar and length limit.
func ValidRepository(s string) bool {
	return len(s) > 0 && len(s) <= MaxRepositoryLength && repoRE.MatchString(s)
}

// ValidTag reports whether s is a tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidTag(s string) bool { return tagRE.MatchString(s) }
