// Package credential carries a client's registry credential (the Authorization header it sent)
// from the HTTP edge to the parts that must prove it at the origin or forward it to a peer, and
// the refusal that asks a client for one. A Credential never prints its secret: String, logs and
// cache keys use a SHA-256 of it.
package credential

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// MaxLen bounds the Authorization header a credential is taken from (a bearer token from a
// registry's token server is a few KiB at most); a longer header is dropped.
const MaxLen = 8 << 10

// Credential is a client's Authorization header value ("Bearer <token>" or "Basic <base64>"),
// kept opaque. The zero value is no credential. It is comparable; compare keys, not secrets.
type Credential struct {
	header string
}

// FromHeader takes the value of an Authorization header. Anything other than a Bearer or Basic
// credential of at most MaxLen bytes is no credential.
func FromHeader(h string) Credential {
	h = strings.TrimSpace(h)
	if len(h) > MaxLen || strings.ContainsAny(h, "\r\n") {
		return Credential{}
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || strings.TrimSpace(rest) == "" {
		return Credential{}
	}
	if !strings.EqualFold(scheme, "Bearer") && !strings.EqualFold(scheme, "Basic") {
		return Credential{}
	}
	return Credential{header: h}
}

// IsZero reports whether there is no credential.
func (c Credential) IsZero() bool { return c.header == "" }

// Header is the Authorization header value to send to the origin or a peer.
func (c Credential) Header() string { return c.header }

// Key is a SHA-256 of the credential, hex: what caches key decisions on, and all logs show.
// The zero credential's key is "".
func (c Credential) Key() string {
	if c.header == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(c.header))
	return hex.EncodeToString(sum[:])
}

// String never shows the secret.
func (c Credential) String() string {
	if c.header == "" {
		return "credential(none)"
	}
	return "credential(sha256:" + c.Key()[:12] + ")"
}

// GoString never shows the secret either (%#v).
func (c Credential) GoString() string { return c.String() }

// Access is the repository a request is for, with the credential its client presented: what a
// node forwards to the peer it asks for that repository's content. Registry is the upstream's
// host[:port] ("" for none).
type Access struct {
	Registry   string
	Repo       string
	Credential Credential
}

type accessKey struct{}

// NewContext returns ctx carrying a.
func NewContext(ctx context.Context, a Access) context.Context {
	return context.WithValue(ctx, accessKey{}, a)
}

// FromContext returns the Access ctx carries, if any.
func FromContext(ctx context.Context) (Access, bool) {
	a, ok := ctx.Value(accessKey{}).(Access)
	return a, ok
}

// Refusal is the answer to a request for private content without a credential the origin
// accepts. Challenge is the origin's WWW-Authenticate header for the repository, which the HTTP
// edge relays so that the client fetches a token with its own pull secret ("" when none is
// known). It wraps errdefs.ErrUnauthorized.
type Refusal struct {
	Repo      string
	Challenge string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("%s: the origin requires credentials for this repository: %v", r.Repo, errdefs.ErrUnauthorized)
}

// Unwrap makes a Refusal an errdefs.ErrUnauthorized.
func (r *Refusal) Unwrap() error { return errdefs.ErrUnauthorized }

// WWWAuthenticate is the challenge to relay ("" for none).
func (r *Refusal) WWWAuthenticate() string { return r.Challenge }
