// Package throttle paces byte streams to a node's configured rates (--max-upload-rate,
// --max-download-rate). One Limiter is shared by every transfer in its direction, so the
// limit holds for the node as a whole.
package throttle

import (
	"context"
	"io"

	"golang.org/x/time/rate"
)

// Limiter paces bytes. A nil *Limiter means unlimited; its methods are then no-ops.
type Limiter struct {
	l *rate.Limiter
}

// New returns a limiter of bytesPerSecond, or nil (unlimited) when bytesPerSecond <= 0. The burst
// is a tenth of a second of traffic (at least 64 KiB), so the rate holds over short intervals too.
func New(bytesPerSecond int64) *Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	burst := max(bytesPerSecond/10, 64<<10)
	return &Limiter{l: rate.NewLimiter(rate.Limit(bytesPerSecond), int(burst))}
}

// Wait blocks until n bytes may pass, or ctx ends.
func (l *Limiter) Wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	for n > 0 {
		k := min(n, l.l.Burst())
		if err := l.l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// Reader paces reads from r.
func (l *Limiter) Reader(ctx context.Context, r io.Reader) io.Reader {
	if l == nil {
		return r
	}
	return &reader{ctx: ctx, l: l, r: r}
}

// Writer paces writes to w.
func (l *Limiter) Writer(ctx context.Context, w io.Writer) io.Writer {
	if l == nil {
		return w
	}
	return &writer{ctx: ctx, l: l, w: w}
}

type reader struct {
	ctx context.Context
	l   *Limiter
	r   io.Reader
}

func (r *reader) Read(p []byte) (int, error) {
	// Ask for at most one burst at a time so a large buffer does not stall for long.
	if b := r.l.l.Burst(); len(p) > b {
		p = p[:b]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if werr := r.l.Wait(r.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

type writer struct {
	ctx context.Context
	l   *Limiter
	w   io.Writer
}

func (w *writer) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), w.l.l.Burst())
		if err := w.l.Wait(w.ctx, k); err != nil {
			return written, err
		}
		n, err := w.w.Write(p[:k])
		written += n
		if err != nil {
			return written, err
		}
		p = p[k:]
	}
	return written, nil
}
