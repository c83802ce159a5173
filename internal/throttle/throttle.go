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

	// Priority streams: while one waits for tokens, and for priorityLinger after, the link is
	// theirs first. Ordinary streams then take only what the priority streams leave: tokens the
	// bucket holds beyond a headroom (a priority stream whose own source is slower than the link
	// leaves some), and a floor share (floor, 1/floorShare of the rate) taken ahead of the priority
	// streams, so that no ordinary stream starves for as long as a priority stream runs (a
	// coordinator's origin fetch of a large layer can run for minutes; the node's own peer
	// downloads waiting that long would miss their deadlines).
	//
	// The linger spans the moment between a priority stream's waits (it reads its source, hands
	// the bytes on, asks again): without it, every ordinary stream woken at that moment reserved a
	// burst ahead of the priority stream's next wait, and the priority stream got a quarter of the
	// link among three others.
	floor   *rate.Limiter
	mu      sync.Mutex
	waiting int       // priority streams waiting for tokens
	quiet   time.Time // the last priority wait + linger: until then, ordinary streams defer

	// The bytes granted in the current and the previous meterWindow, for Spare.
	meterStart          time.Time
	meterCur, meterPrev int64
}

const (
	// priorityLinger is how long after a priority stream's wait ordinary streams keep deferring.
	priorityLinger = 20 * time.Millisecond
	// floorShare: while priority streams run, ordinary streams together are sure of at least
	// 1/floorShare of the rate.
	floorShare = 8
	// meterWindow is the span Spare looks back over: between one and two of them.
	meterWindow = 500 * time.Millisecond
	// spareBelow: the link is spare when it carried less than this share of its rate lately.
	spareBelow = 0.8
	// leftoverPoll bounds how long an ordinary stream deferring to a priority stream sleeps
	// before it looks at the bucket again. The floor share's burst is 1/floorShare of the link's,
	// so the ordinary streams get no more than that at once ahead of a priority stream.
	leftoverPoll = 10 * time.Millisecond
)

// New returns a limiter of bytesPerSecond, or nil (unlimited) when bytesPerSecond <= 0. The burst
// is a tenth of a second of traffic (at least 64 KiB), so the rate holds over short intervals too.
func New(bytesPerSecond int64) *Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	burst := int(max(bytesPerSecond/10, 64<<10))
	return &Limiter{
		l:     rate.NewLimiter(rate.Limit(bytesPerSecond), burst),
		floor: rate.NewLimiter(rate.Limit(bytesPerSecond)/floorShare, max(burst/floorShare, 4<<10)),
	}
}

// Wait blocks until n bytes may pass, or ctx ends.
func (l *Limiter) Wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	for n > 0 {
		now := time.Now()
		if !l.prioritized(now) {
			k := min(n, l.l.Burst())
			if err := l.take(ctx, k); err != nil {
				return err
			}
			n -= k
			continue
		}
		k, err := l.yieldStep(ctx, min(n, l.l.Burst()))
		if err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// prioritized reports whether a priority stream holds the link: one is waiting for tokens, or
// waited less than priorityLinger ago.
func (l *Limiter) prioritized(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting > 0 || now.Before(l.quiet)
}

// yieldStep is one step of an ordinary stream's wait for k <= burst tokens while a priority stream
// holds the link. It takes what the bucket holds beyond a headroom left for the priority streams
// (a quarter of a burst), up to k; else up to a floor burst of them if the floor share has
// them within the step, queueing them on the link with the priority streams (whose next bytes wait
// that much longer); else it sleeps for at most leftoverPoll and takes none. It returns how many
// it took.
func (l *Limiter) yieldStep(ctx context.Context, k int) (int, error) {
	now := time.Now()
	headroom := float64(l.l.Burst() / 4)
	// Part of k is taken too, a floor burst at least: on a slow link one read can be nearly a
	// whole burst, which the bucket never holds beyond the headroom.
	if kk := min(k, int(l.l.TokensAt(now)-headroom)); kk > 0 && (kk == k || kk >= l.floor.Burst()) && l.l.AllowN(now, kk) {
		l.granted(now, kk)
		return kk, nil
	}
	fk := min(k, l.floor.Burst())
	r := l.floor.ReserveN(now, fk)
	// How long the bucket would take to hold k beyond the headroom if nobody took from it.
	fill := time.Duration((float64(k) + headroom - l.l.TokensAt(now)) / float64(l.l.Limit()) * float64(time.Second))
	step := min(max(fill, time.Millisecond), leftoverPoll)
	if d := r.DelayFrom(now); r.OK() && d <= step {
		if err := sleepCtx(ctx, d); err != nil {
			r.Cancel()
			return 0, err
		}
		return fk, l.take(ctx, fk)
	}
	r.CancelAt(now)
	return 0, sleepCtx(ctx, step)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitPriority is Wait for a priority stream.
func (l *Limiter) waitPriority(ctx context.Context, n int) error {
	l.mu.Lock()
	l.waiting++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.quiet = time.Now().Add(priorityLinger)
		l.waiting--
		l.mu.Unlock()
	}()
	for n > 0 {
		k := min(n, l.l.Burst())
		if err := l.take(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// take queues for k <= burst tokens of the link and waits for them, counting them for Spare.
func (l *Limiter) take(ctx context.Context, k int) error {
	l.granted(time.Now(), k)
	return l.l.WaitN(ctx, k)
}

// granted counts n bytes asked for at now (a wait that then fails still counts: it is rare,
// and Spare only needs the recent load).
func (l *Limiter) granted(now time.Time, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.roll(now)
	l.meterCur += int64(n)
}

// roll starts a new meter window when the current one is over. Called with l.mu held.
func (l *Limiter) roll(now time.Time) {
	switch since := now.Sub(l.meterStart); {
	case since >= 2*meterWindow:
		l.meterStart, l.meterCur, l.meterPrev = now, 0, 0
	case since >= meterWindow:
		l.meterStart, l.meterCur, l.meterPrev = l.meterStart.Add(meterWindow), 0, l.meterCur
	}
}

// Spare reports whether the link carried less than spareBelow of its rate over the last second
// or so: whoever paces its sending through l could send more. False for a nil (unlimited)
// limiter, whose link's capacity is not known.
func (l *Limiter) Spare() bool {
	if l == nil {
		return false
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.roll(now)
	span := meterWindow + now.Sub(l.meterStart)
	return float64(l.meterPrev+l.meterCur) < spareBelow*float64(l.l.Limit())*span.Seconds()
}

// Reader paces reads from r.
func (l *Limiter) Reader(ctx context.Context, r io.Reader) io.Reader {
	if l == nil {
		return r
	}
	return &reader{ctx: ctx, l: l, r: r}
}

// PriorityReader paces reads from r ahead of every other stream of the limiter: while it runs,
// the others get what it leaves of the link, and a floor share. For a transfer the whole cluster
// waits on (a coordinator's fetch from the origin), which must not share the link with this node's
// own swarm downloads.
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
