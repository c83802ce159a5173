package registryapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// Error is one OCI distribution error, as sent in the {"errors":[...]} body.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
	// Challenge, on a 401, is the WWW-Authenticate header to send: the origin's, relayed so the
	// client fetches a token with its own pull secret.
	Challenge string `json:"-"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// OCI error codes (distribution-spec, "Error Codes"), plus the two that distribution adds
// for transient conditions.
const (
	CodeBlobUnknown       = "BLOB_UNKNOWN"
	CodeBlobUploadInvalid = "BLOB_UPLOAD_INVALID"
	CodeBlobUploadUnknown = "BLOB_UPLOAD_UNKNOWN"
	CodeDigestInvalid     = "DIGEST_INVALID"
	CodeManifestUnknown   = "MANIFEST_UNKNOWN"
	CodeManifestInvalid   = "MANIFEST_INVALID"
	CodeNameInvalid       = "NAME_INVALID"
	CodeNameUnknown       = "NAME_UNKNOWN"
	CodeSizeInvalid       = "SIZE_INVALID"
	CodeUnauthorized      = "UNAUTHORIZED"
	CodeDenied            = "DENIED"
	CodeUnsupported       = "UNSUPPORTED"
	CodeTooManyRequests   = "TOOMANYREQUESTS"
	CodeRangeInvalid      = "RANGE_INVALID"
	CodeUnavailable       = "UNAVAILABLE"
	CodeUnknown           = "UNKNOWN"
	CodeManifestBlobUnkwn = "MANIFEST_BLOB_UNKNOWN"
)

func newError(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// toError maps an error class to the OCI error the client sees. notFoundCode is the code for
// ErrNotFound, which depends on what was asked for. Messages come from our own wording, never
// from an error string that could carry a path or an upstream's body.
func toError(err error, notFoundCode string) *Error {
	var oe *Error
	switch {
	case errors.As(err, &oe):
		return oe
	case errors.Is(err, errdefs.ErrNoSpace):
		return noSpace()
	case errors.Is(err, errdefs.ErrNotFound):
		msg := "content not found"
		switch notFoundCode {
		case CodeBlobUnknown:
			msg = "blob unknown to registry"
		case CodeManifestUnknown:
			msg = "manifest unknown to registry"
		}
		return newError(http.StatusNotFound, notFoundCode, msg)
	case errors.Is(err, errdefs.ErrUnauthorized):
		e := newError(http.StatusUnauthorized, CodeUnauthorized, "authentication required: the upstream registry does not serve this repository anonymously")
		var ch interface{ WWWAuthenticate() string }
		if errors.As(err, &ch) {
			e.Challenge = ch.WWWAuthenticate()
		}
		if e.Challenge == "" {
			e.Challenge = `Basic realm="shoal"`
		}
		return e
	case errors.Is(err, errdefs.ErrNotConfigured):
		// 404 makes containerd and other mirror clients try their next host.
		return newError(http.StatusNotFound, CodeNameUnknown, "the requested registry is not an upstream of this mirror")
	case errors.Is(err, errdefs.ErrInvalid):
		return newError(http.StatusBadRequest, CodeNameInvalid, "invalid request")
	case errors.Is(err, errdefs.ErrTooLarge):
		return newError(http.StatusBadGateway, CodeManifestInvalid, "upstream manifest exceeds the 4 MiB limit")
	case errors.Is(err, errdefs.ErrDigestMismatch):
		return newError(http.StatusBadGateway, CodeDigestInvalid, "upstream content does not match its digest")
	case errors.Is(err, errdefs.ErrDenied):
		return newError(http.StatusForbidden, CodeDenied, "the upstream registry denied access")
	case errors.Is(err, errdefs.ErrTooManyRequests):
		return newError(http.StatusTooManyRequests, CodeTooManyRequests, "the upstream registry is rate limiting this mirror")
	case errors.Is(err, errdefs.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusServiceUnavailable, CodeUnavailable, "the upstream registry is unavailable")
	case errors.Is(err, errdefs.ErrUnsupported):
		return newError(http.StatusMethodNotAllowed, CodeUnsupported, "the operation is unsupported")
	default:
		return newError(http.StatusInternalServerError, CodeUnknown, "internal error")
	}
}

// noSpace is the answer when the node's store has no room: 507, which a runtime's mirror client
// treats like any 5xx and takes the content from its next host, and a pushing client reports.
func noSpace() *Error {
	return newError(http.StatusInsufficientStorage, CodeUnavailable, "the node's store is full")
}

// WriteError sends e as an OCI error body ({"errors":[e]}), the one writer of OCI errors: the
// /v2 handlers use it, and so does the node's HTTP surface for what it refuses before /v2 (the
// admin check). Headers describing content (Content-Range, Docker-Content-Digest) are removed.
// HEAD responses carry the status and headers only.
func WriteError(w http.ResponseWriter, r *http.Request, e *Error) {
	h := w.Header()
	for _, k := range []string{"Content-Range", "Docker-Content-Digest", "Accept-Ranges", "Content-Length"} {
		if k == "Content-Range" && e.Status == http.StatusRequestedRangeNotSatisfiable {
			continue // "bytes */size" tells the client the blob's length (RFC 9110, 15.5.17)
		}
		h.Del(k)
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.Challenge != "" && e.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", e.Challenge)
	}
	body, _ := json.Marshal(struct {
		Errors []*Error `json:"errors"`
	}{[]*Error{e}})
	if r.Method == http.MethodHead {
		w.WriteHeader(e.Status)
		return
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(append(body, '\n'))
}
