// Package notfound remembers, briefly and in bounded memory, what an origin said does not exist,
// so that a flood of requests for missing content (a peer asking its coordinator to pull made-up
// digests, a client retrying a typo) costs the origin one request per key and TTL.
package notfound

import (
	"container/list"
	"sync"
	"time"
)

// Cache is a set of keys that expire TTL after they were added, holding at most Max of them
// (past it the oldest is forgotten first). Its methods are safe for concurrent use.
type Cache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu    sync.Mutex
	order *list.List // of *entry, oldest first (every entry lives ttl, so also by expiry)
	keys  map[string]*list.Element
}

type entry struct {
	key     string
	expires time.Time
}

// New returns a cache whose keys live ttl, max keys at most. A ttl or max below 1 disables it:
// Has is then always false.
func New(ttl time.Duration, max int) *Cache {
	return &Cache{ttl: ttl, max: max, now: time.Now, order: list.New(), keys: map[string]*list.Element{}}
}

// WithClock makes the cache read time from now (tests).
func (c *Cache) WithClock(now func() time.Time) *Cache { c.now = now; return c }

// Add remembers key for the TTL from now.
func (c *Cache) Add(key string) {
	if c == nil || c.ttl <= 0 || c.max < 1 {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
	if el, ok := c.keys[key]; ok {
		el.Value.(*entry).expires = now.Add(c.ttl)
		c.order.MoveToBack(el)
		return
	}
	for c.order.Len() >= c.max {
		c.remove(c.order.Front())
	}
	c.keys[key] = c.order.PushBack(&entry{key: key, expires: now.Add(c.ttl)})
}

// Has reports whether key was added less than the TTL ago.
func (c *Cache) Has(key string) bool {
	if c == nil || c.ttl <= 0 || c.max < 1 {
		return false
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
	_, ok := c.keys[key]
	return ok
}

// Len is how many keys are remembered (expired ones included until the next call).
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// expire forgets the entries whose time is up, oldest first.
func (c *Cache) expire(now time.Time) {
	for el := c.order.Front(); el != nil && !el.Value.(*entry).expires.After(now); el = c.order.Front() {
		c.remove(el)
	}
}

func (c *Cache) remove(el *list.Element) {
	delete(c.keys, el.Value.(*entry).key)
	c.order.Remove(el)
}
