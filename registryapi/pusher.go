package registryapi

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
)

// Pusher is the push side of the API: uploads, manifests and deletes. A Server answers the push
// and content-management routes only when given one with WithPush; without it they are refused
// with UNSUPPORTED. Repositories are named by path only: the request's ns parameter does not
// reach a Pusher.
//
// Errors wrap errdefs classes or the push classes below: ErrNotFound for a repository, manifest,
// tag or blob that is not there, ErrUploadUnknown, ErrDigestMismatch when content does not hash
// to its digest, ErrTooLarge beyond a size limit, ErrUnsupported for an operation switched off
// (deletes), ErrTooManyRequests when too many uploads are open.
type Pusher interface {
	BlobPusher
	ManifestPusher
	Deleter
}

// BlobPusher runs upload sessions: a session is opened, receives the blob's bytes in order over
// one or more requests, and ends with FinishUpload (which names the digest) or CancelUpload. A
// session belongs to the repository it was opened for; naming it with another repository is
// ErrUploadUnknown.
type BlobPusher interface {
	// StartUpload opens a session in repo and returns its id, made of [A-Za-z0-9_-]. alg is the
	// digest algorithm the client announced, or "" when it did not (the content is still
	// accepted under another algorithm at FinishUpload).
	StartUpload(ctx context.Context, repo string, alg digest.Algorithm) (id string, err error)
	// WriteUpload appends body, read to its end, to the session at offset off, which must be
	// the session's size (an *UploadRangeError otherwise, and nothing is read); off < 0 appends
	// wherever the session ends. It returns the session's size afterwards, also with an error
	// once bytes were written.
	WriteUpload(ctx context.Context, repo, id string, off int64, body io.Reader) (int64, error)
	// UploadSize returns the number of bytes the session holds.
	UploadSize(ctx context.Context, repo, id string) (int64, error)
	// FinishUpload verifies the session's bytes against d and commits them as a blob of repo,
	// returning its size. The session ends whatever the result; on a mismatch its bytes are gone.
	FinishUpload(ctx context.Context, repo, id string, d digest.Digest) (int64, error)
	// CancelUpload ends the session and removes its bytes.
	CancelUpload(ctx context.Context, repo, id string) error
	// MountBlob makes blob d, held by repository from, a blob of repo as well; from == "" means
	// any repository the pusher holds. ErrNotFound when from does not hold d.
	MountBlob(ctx context.Context, repo, from string, d digest.Digest) error
}

// ManifestPusher stores manifests.
type ManifestPusher interface {
	// PutManifest stores m (already checked to be JSON of at most oci.MaxManifestSize bytes
	// hashing to m.Digest) in repo, and points each of tags at it. A config, layer or child
	// manifest missing from repo is an error wrapping ErrManifestBlobUnknown; a body that is not
	// a manifest, ErrManifestInvalid.
	PutManifest(ctx context.Context, repo string, tags []string, m *Manifest) error
}

// Deleter removes content from repositories; ErrNotFound when it is not there, ErrUnsupported
// when deletes are switched off.
type Deleter interface {
	DeleteManifest(ctx context.Context, repo string, d digest.Digest) error
	DeleteTag(ctx context.Context, repo, tag string) error
	DeleteBlob(ctx context.Context, repo string, d digest.Digest) error
}

// Push error classes, beside the errdefs ones, for the OCI codes only a push can cause.
var (
	// ErrUploadUnknown means the upload session does not exist (never did, ended, or expired).
	ErrUploadUnknown = errors.New("upload unknown")
	// ErrManifestBlobUnknown means a manifest references content its repository does not hold.
	ErrManifestBlobUnknown = errors.New("manifest references unknown content")
	// ErrManifestInvalid means a pushed manifest is malformed.
	ErrManifestInvalid = errors.New("manifest invalid")
)

// UploadRangeError reports a chunk that does not start where the session ends: chunks must
// arrive in order. Size is the session's size, which the client resumes from.
type UploadRangeError struct {
	Offset, Size int64
}

func (e *UploadRangeError) Error() string {
	return fmt.Sprintf("chunk at offset %d, but the upload holds %d bytes", e.Offset, e.Size)
}
