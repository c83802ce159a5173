// Package errdefs holds the few error classes that every Shoal package shares.
//
// Packages wrap these sentinels with context (fmt.Errorf("blob %s: %w", dgst, errdefs.ErrNotFound))
// and callers test them with errors.Is. Only the HTTP edge (registryapi) turns them into OCI error codes.
package errdefs

import "errors"

var (
	// ErrNotFound means the content, tag or repository does not exist where it was looked for.
	ErrNotFound = errors.New("not found")
	// ErrInvalid means the caller's input is malformed: a name, reference, digest or range.
	ErrInvalid = errors.New("invalid argument")
	// ErrDigestMismatch means bytes did not hash to the digest that names them.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrTooLarge means content exceeds a size limit (a manifest over 4 MiB, say).
	ErrTooLarge = errors.New("content too large")
	// ErrUnavailable means a remote (origin or peer) could not be reached or failed transiently.
	ErrUnavailable = errors.New("unavailable")
	// ErrDenied means a remote refused our credentials or the request is not permitted.
	ErrDenied = errors.New("denied")
	// ErrUnauthorized means the content is private and the client presented no credential the
	// origin accepts for it (see internal/credential).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrTooManyRequests means a remote rate-limited us.
	ErrTooManyRequests = errors.New("too many requests")
	// ErrNotConfigured means a request named an upstream registry this node does not serve.
	ErrNotConfigured = errors.New("upstream not configured")
	// ErrUnsupported means the operation is not offered by this node.
	ErrUnsupported = errors.New("unsupported")
	// ErrNoSpace means the node's store has no room for the content: its disk is full (ENOSPC,
	// EDQUOT) or the content is larger than --max-store-size. Nothing of it is kept.
	ErrNoSpace = errors.New("no space left in the store")
)
