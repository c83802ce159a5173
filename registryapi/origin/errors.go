package origin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// classify wraps err with its errdefs class, keeping err (often a *transport.Error) reachable with
// errors.As: 404 is ErrNotFound, 401 and 403 ErrDenied, 429 ErrTooManyRequests, 408 and 5xx
// ErrUnavailable. Other statuses keep no class. Any error without a status (network, timeout,
// cancellation, token exchange) is ErrUnavailable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var class error = errdefs.ErrUnavailable
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch s := terr.StatusCode; {
		case s == http.StatusNotFound:
			class = errdefs.ErrNotFound
		case s == http.StatusUnauthorized || s == http.StatusForbidden:
			class = errdefs.ErrDenied
		case s == http.StatusTooManyRequests:
			class = errdefs.ErrTooManyRequests
		case s == http.StatusRequestTimeout || s >= 500:
			class = errdefs.ErrUnavailable
		default:
			return err
		}
	}
	return fmt.Errorf("origin: %w: %w", err, class)
}

// check returns nil when resp has one of the wanted statuses. Otherwise it reads the origin's error
// body (bounded by ggcr), closes it, and returns the classified *transport.Error.
func check(resp *http.Response, want ...int) error {
	err := transport.CheckError(resp, want...)
	if err != nil {
		resp.Body.Close()
	}
	return classify(err)
}

// asTransportError is errors.As for ggcr's *transport.Error.
func asTransportError(err error, target **transport.Error) bool { return errors.As(err, target) }
