// Package quota gives each of many callers (peers) its own allowance of costly requests: a token
// bucket per key, in bounded memory.
package quota

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// PerKey is a token bucket per key: Burst requests at once, then Rate a second. Its methods are
// safe for concurrent use.
type PerKey struct {
	rate  rate.Limit
	burst int
	max   int
	now   func() time.Time

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

// New returns buckets of burst requests refilled at perSecond, for at most maxKeys keys at once.
// Past maxKeys, keys whose bucket is full are forgotten (a new bucket is the same); if none is,
// an arbitrary one is, which can only give that key a fresh burst.
func New(perSecond float64, burst, maxKeys int) *PerKey {
	return &PerKey{rate: rate.Limit(perSecond), burst: max(burst, 1), max: max(maxKeys, 1), now: time.Now,
		m: map[string]*rate.Limiter{}}
}

// WithClock makes the buckets read time from now (tests).
func (q *PerKey) WithClock(now func() time.Time) *PerKey { q.now = now; return q }

// Allow takes one request from key's bucket, reporting false when it is empty.
func (q *PerKey) Allow(key string) bool {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	l, ok := q.m[key]
	if !ok {
		if len(q.m) >= q.max {
			q.forget(now)
		}
		l = rate.NewLimiter(q.rate, q.burst)
		q.m[key] = l
	}
	return l.AllowN(now, 1)
}

// forget drops the keys with a full bucket, or one key if none has.
func (q *PerKey) forget(now time.Time) {
	var any string
	for k, l := range q.m {
		any = k
		if l.TokensAt(now) >= float64(q.burst) {
			delete(q.m, k)
		}
	}
	if len(q.m) >= q.max {
		delete(q.m, any)
	}
}
