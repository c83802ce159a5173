package access

import (
	"context"
	"fmt"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// Membership answers whether a repository lists a digest: the digest is one of its manifests or
// named by one. It is asked when the node's Records do not know; cred is the credential of the
// client asking (zero for an anonymous question about a public repository). An error wrapping
// errdefs.ErrUnavailable means it cannot tell now; ErrUnauthorized that cred was refused.
type Membership interface {
	Lists(ctx context.Context, reg *origin.Registry, repo string, d digest.Digest, cred credential.Credential) (bool, error)
}

// Origin is what access asks an upstream registry. *origin.Client implements it.
type Origin interface {
	Probe(ctx context.Context, reg *origin.Registry, repo string) (origin.Privacy, error)
	Check(ctx context.Context, reg *origin.Registry, repo string, obj origin.Object, cred credential.Credential) (status int, challenge string, err error)
	Ping(ctx context.Context, reg *origin.Registry) (status int, challenge string, err error)
}

var _ Origin = (*origin.Client)(nil)

// OriginMembership asks the origin: a HEAD of the digest as a blob of the repository, then as a
// manifest, with the client's credential.
type OriginMembership struct {
	Origin Origin
}

var _ Membership = OriginMembership{}

// Lists implements Membership.
func (o OriginMembership) Lists(ctx context.Context, reg *origin.Registry, repo string, d digest.Digest, cred credential.Credential) (bool, error) {
	for _, obj := range []origin.Object{origin.BlobObject(d), origin.ManifestObject(d.String())} {
		status, challenge, err := o.Origin.Check(ctx, reg, repo, obj, cred)
		switch {
		case err != nil:
			return false, err
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			return false, &credential.Refusal{Repo: repo, Challenge: challenge}
		case status < 300 || (status >= 300 && status < 400):
			return true, nil
		case status != http.StatusNotFound:
			return false, fmt.Errorf("origin answered %d for %s in %s: %w", status, d, repo, errdefs.ErrUnavailable)
		}
	}
	return false, nil
}
