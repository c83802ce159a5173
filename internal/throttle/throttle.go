// Package throttle paces byte streams to a node's configured rates (--max-upload-rate,
// --max-download-rate). One Limiter is shared by every transfer in its direction, so the
// limit holds for the node as a whole.
package throttle

import (
	"context"
	"io"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter paces bytes. A nil *Limiter means unlimited; its methods are then no-ops.
type Limiter struct {
	l *rate.Limiter

	// Priority streams: while one waits for tokens, and for priorityLinger after, ordinary
	// streams take none, so the bytes the link can carry go to it first. The linger spans the
	// moment between a priority stream's waits (it reads its source, hands the bytes on, asks
	// again): without it, every ordinary stream woken at that moment reserved a burst ahead of
	// the priority stream's next wait, and the priority stream got a quarter of the link among
	// three others. A priority stream that stops asking (its own source is slow) leaves the link
	// to the others after the linger.
	mu      sync.Mutex
	waiting int           // priority streams waiting for tokens
	clear   chan struct{} // closed when waiting drops to zero
	quiet   time.Time     // ordinary streams wait until then (the last priority wait + linger)
}

// priorityLinger is how long after a priority stream's wait ordinary streams keep waiting.
const priorityLinger = 20 * time.Millisecond

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
	for {
		l.mu.Lock()
		if l.waiting == 0 {
			quiet := time.Until(l.quiet)
			l.mu.Unlock()
			if quiet <= 0 {
				break
			}
			t := time.NewTimer(quiet)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
			continue
		}
		clear := l.clear
		l.mu.Unlock()
		select {
		case <-clear:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return l.wait(ctx, n)
}

// waitPriority is Wait for a priority stream.
func (l *Limiter) waitPriority(ctx context.Context, n int) error {
	l.mu.Lock()
	if l.waiting == 0 {
		l.clear = make(chan struct{})
	}
	l.waiting++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.quiet = time.Now().Add(priorityLinger)
		if l.waiting--; l.waiting == 0 {
			close(l.clear)
		}
		l.mu.Unlock()
	}()
	return l.wait(ctx, n)
}

func (l *Limiter) wait(ctx context.Context, n int) error {
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

// PriorityReader paces reads from r ahead of every other stream of the limiter: while it waits
// for tokens, the others wait for it. For a transfer the whole cluster waits on (a coordinator's
// fetch from the origin), which must not share the link with this node's own swarm downloads.
func (l *Limiter) PriorityReader(ctx context.Context, r io.Reader) io.Reader {
	if l == nil {
		return r
	}
	return &reader{ctx: ctx, l: l, r: r, priority: true}
}

// Writer paces writes to w.
func (l *Limiter) Writer(ctx context.Context, w io.Writer) io.Writer {
	if l == nil {
		return w
	}
	return &writer{ctx: ctx, l: l, w: w}
}

type reader struct {
	ctx      context.Context
	l        *Limiter
	r        io.Reader
	priority bool
}

func (r *reader) Read(p []byte) (int, error) {
	// Ask for at most one burst at a time so a large buffer does not stall for long.
	if b := r.l.l.Burst(); len(p) > b {
		p = p[:b]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		wait := r.l.Wait
		if r.priority {
			wait = r.l.waitPriority
		}
		if werr := wait(r.ctx, n); werr != nil && err == nil {
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
