// Package reference parses image references ("[registry/]repository[:tag][@digest]") and knows
// the names of registry hosts, so that a pin, a preheat and the origin client agree on what a
// reference names and on which hosts are Docker Hub.
//
// Parsing is go-containerregistry's (its name package, the grammar docker uses), with three
// differences Shoal needs. A reference without a registry keeps none: it means the node's first
// upstream, or a hosted repository, not Docker Hub. The registry stays as written ("docker.io",
// where ggcr says "index.docker.io"), since it is part of a pin's key. And the repository and
// tag are held to the distribution spec's grammar (internal/names), stricter than ggcr's
// character sets, as everywhere else Shoal takes a name.
package reference

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
)

// maxLength bounds a reference before it is parsed: names are limited anyway, and a request
// body should not make the parser walk megabytes.
const maxLength = 1024

// Ref is a parsed image reference.
type Ref struct {
	// Registry is the registry host as written, "" when the reference names none: the node's
	// first upstream, or a hosted repository when the node has no upstream.
	Registry string
	// Repo is the repository path, with "library/" added for a Docker Hub name that has no
	// namespace, as Docker Hub itself does.
	Repo string
	// Tag is the tag, "latest" when the reference has neither tag nor digest. A reference with
	// both keeps the tag, though the digest is what it names.
	Tag string
	// Digest is the digest, "" when the reference has none.
	Digest digest.Digest
}

// String is the normalised form, the key pins are recorded under: [registry/]repo:tag, or
// [registry/]repo@digest when there is a digest.
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

// Reference is what to ask a registry's manifests endpoint for: the digest when the reference
// has one, else the tag.
func (r Ref) Reference() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// Parse parses [registry/]repo[:tag][@digest], the way docker does: the first path component is
// a registry when it contains a dot or a colon or is "localhost". A Docker Hub name without a
// namespace gets "library/". The tag defaults to latest. Errors wrap errdefs.ErrInvalid.
func Parse(s string) (Ref, error) {
	bad := func(why string) (Ref, error) {
		return Ref{}, fmt.Errorf("image reference %q: %s: %w", s, why, errdefs.ErrInvalid)
	}
	if s == "" || len(s) > maxLength {
		return bad("empty or too long")
	}
	// No default registry: ggcr's would be Docker Hub. No default tag: a tag written beside a
	// digest must be told from none.
	opts := []name.Option{name.WithDefaultRegistry(""), name.WithDefaultTag("")}
	parsed, err := name.ParseReference(s, opts...)
	if err != nil {
		return bad("want [registry/]repository[:tag][@digest]")
	}
	var r Ref
	switch p := parsed.(type) {
	case name.Tag:
		r.Tag = p.TagStr()
	case name.Digest:
		r.Digest = digest.Digest(p.DigestStr())
		// ggcr drops a tag written beside the digest; Ref keeps it, parsed by ggcr as well.
		before, _, _ := strings.Cut(s, "@")
		t, err := name.NewTag(before, opts...)
		if err != nil {
			return bad("malformed tag")
		}
		r.Tag = t.TagStr()
	default:
		return bad("neither a tag nor a digest")
	}
	if parsed.Context().RegistryStr() != "" {
		// ggcr found a registry, which is the first path component; keep it as written.
		r.Registry, _, _ = strings.Cut(s, "/")
	}
	r.Repo = parsed.Context().RepositoryStr()
	if IsDockerHub(r.Registry) && !strings.Contains(r.Repo, "/") {
		r.Repo = "library/" + r.Repo // ggcr does this for index.docker.io only
	}
	if !names.ValidRepository(r.Repo) {
		return bad("malformed repository name")
	}
	if r.Tag != "" && !names.ValidTag(r.Tag) {
		return bad("malformed tag")
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}
