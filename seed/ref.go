package seed

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
)

// Ref is a parsed image reference.
type Ref struct {
	// Registry is the registry host, "" when the reference names none: the node's first upstream,
	// or a hosted repository when the node has no upstream.
	Registry string
	Repo     string
	Tag      string
	Digest   digest.Digest
}

// String is the normalised form, the key pins are recorded under.
func (r Ref) String() string {
	s := r.Repo
	if r.Registry != "" {
		s = r.Registry + "/" + s
	}
	if r.Digest != "" {
		return s + "@" + r.Digest.String()
	}
	return s + ":" + r.Tag
}

// Reference is the tag, or the digest when the reference has one.
func (r Ref) Reference() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// ParseRef parses [registry/]repo[:tag][@digest], the way docker does: the first path component
// is a registry when it contains a dot or a colon or is "localhost". A Docker Hub name without a
// namespace gets "library/". The tag defaults to latest.
func ParseRef(s string) (Ref, error) {
	bad := func(why string) (Ref, error) {
		return Ref{}, fmt.Errorf("image reference %q: %s: %w", s, why, errdefs.ErrInvalid)
	}
	if s == "" || len(s) > 1024 {
		return bad("empty or too long")
	}
	var r Ref
	rest := s
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		d, err := digest.Parse(rest[i+1:])
		if err != nil {
			return bad("malformed digest")
		}
		r.Digest, rest = d, rest[:i]
	}
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		r.Tag, rest = rest[i+1:], rest[:i]
		if !names.ValidTag(r.Tag) {
			return bad("malformed tag")
		}
	}
	if first, after, ok := strings.Cut(rest, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		r.Registry, rest = first, after
	}
	if isDockerHub(r.Registry) && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	if !names.ValidRepository(rest) {
		return bad("malformed repository name")
	}
	r.Repo = rest
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

func isDockerHub(host string) bool {
	switch host {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return true
	}
	return false
}
