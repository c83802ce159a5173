package origin

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// The OCI distribution grammar for repository names and tags. Callers validate already; checking
// again here keeps a bad name from ever shaping an origin URL.
var (
	repoRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

func checkRepo(repo string) error {
	if !repoRE.MatchString(repo) {
		return fmt.Errorf("repository %q: %w", repo, errdefs.ErrInvalid)
	}
	return nil
}

func checkDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w: %w", d, err, errdefs.ErrInvalid)
	}
	return nil
}

// parseRef checks a manifest reference and returns its digest, or "" when it is a tag.
func parseRef(ref string) (digest.Digest, error) {
	if !strings.Contains(ref, ":") {
		if !tagRE.MatchString(ref) {
			return "", fmt.Errorf("tag %q: %w", ref, errdefs.ErrInvalid)
		}
		return "", nil
	}
	d := digest.Digest(ref)
	return d, checkDigest(d)
}
