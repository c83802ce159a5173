package origin

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
)

// Callers validate names already; checking again here keeps a bad name from ever shaping an
// origin URL.
func checkRepo(repo string) error {
	if !names.ValidRepository(repo) {
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
		if !names.ValidTag(ref) {
			return "", fmt.Errorf("tag %q: %w", ref, errdefs.ErrInvalid)
		}
		return "", nil
	}
	d := digest.Digest(ref)
	return d, checkDigest(d)
}
