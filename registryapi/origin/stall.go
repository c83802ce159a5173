package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

var errStalled = errors.New("origin stalled")

// stallReader fails a response body that delivers no byte for d. The timer runs only while a Read
// is waiting, so a slow consumer is not mistaken for a stalled origin. When it fires it cancels the
// request's context, which unblocks the Read. Close releases the request.
type stallReader struct {
	ctx    context.Context
	body   io.ReadCloser
	d      time.Duration
	timer  *time.Timer
	cancel context.CancelCauseFunc
}

func newStallReader(ctx context.Context, body io.ReadCloser, d time.Duration, cancel context.CancelCauseFunc) *stallReader {
	s := &stallReader{ctx: ctx, body: body, d: d, cancel: cancel}
	s.timer = time.AfterFunc(d, func() { cancel(fmt.Errorf("%w: no data for %s", errStalled, d)) })
	s.timer.Stop()
	return s
}

// Read reads from the origin. Errors other than io.EOF wrap errdefs.ErrUnavailable.
func (s *stallReader) Read(p []byte) (int, error) {
	s.timer.Reset(s.d)
	n, err := s.body.Read(p)
	s.timer.Stop()
	if err != nil && err != io.EOF {
		if cause := context.Cause(s.ctx); errors.Is(cause, errStalled) {
			err = cause
		}
		err = fmt.Errorf("reading from origin: %w: %w", err, errdefs.ErrUnavailable)
	}
	return n, err
}

// Close closes the body and cancels the request.
func (s *stallReader) Close() error {
	s.timer.Stop()
	err := s.body.Close()
	s.cancel(nil)
	return err
}
