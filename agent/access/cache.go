package access

import (
	"sync"
	"time"
)

// cache is a map bounded in size and time: entries older than maxAge are gone, and when it is
// full the oldest entry makes room. It is safe for concurrent use.
type cache[V any] struct {
	mu     sync.Mutex
	max    int
	maxAge time.Duration
	m      map[string]entry[V]
}

type entry[V any] struct {
	v  V
	at time.Time
}

func newCache[V any](max int, maxAge time.Duration) *cache[V] {
	return &cache[V]{max: max, maxAge: maxAge, m: make(map[string]entry[V])}
}

// get returns the value under k and when it was put, unless it is older than maxAge.
func (c *cache[V]) get(k string, now time.Time) (V, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || now.Sub(e.at) > c.maxAge {
		var zero V
		return zero, time.Time{}, false
	}
	return e.v, e.at, true
}

func (c *cache[V]) put(k string, v V, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		c.evict(now)
	}
	c.m[k] = entry[V]{v: v, at: now}
}

func (c *cache[V]) del(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}

func (c *cache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// evict drops expired entries, and the oldest one if none had expired. A full sweep per
// eviction is O(max), which a full cache of a few thousand entries affords.
func (c *cache[V]) evict(now time.Time) {
	var oldest string
	var oldestAt time.Time
	dropped := false
	for k, e := range c.m {
		if now.Sub(e.at) > c.maxAge {
			delete(c.m, k)
			dropped = true
			continue
		}
		if oldest == "" || e.at.Before(oldestAt) {
			oldest, oldestAt = k, e.at
		}
	}
	if !dropped && oldest != "" {
		delete(c.m, oldest)
	}
}
