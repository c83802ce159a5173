// Package lifetime bounds work that a component does on behalf of several callers at once (a
// tag resolution many clients wait for, an announcement in the background): such work must not
// end with the first caller's request, but must end when the component closes. A Lifetime is a
// done channel, not a stored context; Context derives one per piece of work.
package lifetime

import (
	"context"
	"sync"
	"time"
)

// Lifetime ends once, when End is called. The zero value is not usable: use New.
type Lifetime struct {
	done chan struct{}
	once sync.Once
}

// New returns a running Lifetime.
func New() *Lifetime { return &Lifetime{done: make(chan struct{})} }

// Context returns a context that ends after timeout, or when the Lifetime ends, whichever comes
// first. The caller must call cancel.
func (l *Lifetime) Context(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	go func() {
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// Done is closed when the Lifetime ends.
func (l *Lifetime) Done() <-chan struct{} { return l.done }

// Ended reports whether End was called.
func (l *Lifetime) Ended() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// End ends the Lifetime and every context it gave; it is safe to call more than once.
func (l *Lifetime) End() { l.once.Do(func() { close(l.done) }) }
