package registryapi

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
)

func validateName(name string) *Error {
	if !names.ValidRepository(name) {
		return &Error{Status: 400, Code: CodeNameInvalid, Message: "invalid repository name"}
	}
	return nil
}

// parseDigest validates a digest with go-digest: a known, available algorithm and an encoded
// part of the right length and alphabet.
func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", &Error{Status: 400, Code: CodeDigestInvalid, Message: "invalid digest", Detail: detailOf(err)}
	}
	return d, nil
}

// reference is a manifest reference: a tag or a digest.
type reference struct {
	tag    string
	digest digest.Digest
}

func (r reference) String() string {
	if r.digest != "" {
		return r.digest.String()
	}
	return r.tag
}

func parseReference(s string) (reference, error) {
	if strings.Contains(s, ":") {
		d, err := parseDigest(s)
		if err != nil {
			return reference{}, err
		}
		return reference{digest: d}, nil
	}
	if !names.ValidTag(s) {
		return reference{}, &Error{Status: 400, Code: CodeManifestInvalid, Message: "invalid tag", Detail: "tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"}
	}
	return reference{tag: s}, nil
}

// detailOf keeps only go-digest's own reason, which names no path or upstream.
func detailOf(err error) string {
	switch {
	case err == digest.ErrDigestUnsupported:
		return "unsupported digest algorithm"
	case err == digest.ErrDigestInvalidLength:
		return "invalid digest length"
	case err == digest.ErrDigestInvalidFormat:
		return "invalid digest format"
	default:
		return fmt.Sprintf("%v", errdefs.ErrInvalid)
	}
}
