// Package gc keeps a node's store under its limit (--max-store-size): when usage, which counts
// content being written as well as committed content, passes the limit, the least recently used
// content is evicted down to 90 % of it. What to keep (pins, a seed's hosted repositories) and
// whom to tell (the announcer, which stops advertising evicted content) are the node's.
package gc

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent/store"
)

// Policy says what a pass removes and whom it tells.
type Policy struct {
	// High and Low are the watermarks: a pass runs while usage exceeds High, until it is at
	// most Low.
	High, Low int64
	// Keep reports committed content that must stay (pinned, hosted); nil keeps nothing.
	// Partial files are never kept: they are resumed, or fetched again.
	Keep func(digest.Digest) bool
	// Evicted is told each committed digest removed (to stop advertising it); nil tells no one.
	Evicted func(digest.Digest)
}

// Collect removes the least recently used content of st while its usage exceeds p.High, until
// it is at most p.Low. Readers holding removed content open keep reading it. It returns the
// bytes freed.
func Collect(ctx context.Context, st *store.Store, p Policy, log *slog.Logger) (int64, error) {
	if used, _ := st.Usage(); p.High <= 0 || used <= p.High {
		return 0, nil
	}
	entries, err := st.Entries(ctx)
	if err != nil {
		return 0, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Used.Before(entries[j].Used) })
	var freed int64
	for _, e := range entries {
		if used, _ := st.Usage(); used <= p.Low {
			break
		}
		if err := ctx.Err(); err != nil {
			return freed, err
		}
		if !e.Partial && p.Keep != nil && p.Keep(e.Digest) {
			continue
		}
		n := e.Size
		if e.Partial {
			n = st.DropPartial(e.Digest) // nothing when a fetch opened it meanwhile
		} else if evicted, err := st.Evict(e.Digest, p.Keep); err != nil || !evicted {
			if err != nil {
				log.Warn("evicting failed", "digest", e.Digest, "err", err)
			}
			continue // or pinned since the pass began
		}
		if !e.Partial && p.Evicted != nil {
			p.Evicted(e.Digest)
		}
		freed += n
		log.Debug("evicted", "digest", e.Digest, "bytes", n, "partial", e.Partial, "last_used", e.Used)
	}
	return freed, nil
}

// Collector runs Collect every Interval and soon after each Kick.
type Collector struct {
	st    *store.Store
	max   int64
	keep  func(digest.Digest) bool
	evict func(digest.Digest)
	freed prometheus.Counter
	log   *slog.Logger
	kick  chan struct{}
}

// Interval is how often the store's usage is checked against its limit when nothing kicks.
const Interval = time.Minute

// New returns a Collector keeping st under max bytes (0: no limit). keep and evicted are
// Policy's; freed counts the bytes evicted.
func New(st *store.Store, max int64, keep func(digest.Digest) bool, evicted func(digest.Digest), freed prometheus.Counter, log *slog.Logger) *Collector {
	return &Collector{st: st, max: max, keep: keep, evict: evicted, freed: freed, log: log, kick: make(chan struct{}, 1)}
}

// Kick asks for a pass soon, without blocking: after a commit, or when a fetch starts (its
// reservation counts toward the limit).
func (c *Collector) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run keeps the store under its limit until ctx ends. Without a limit it returns at once.
func (c *Collector) Run(ctx context.Context) {
	if c.max <= 0 {
		return
	}
	policy := Policy{High: c.max, Low: c.max / 10 * 9, Keep: c.keep, Evicted: c.evict}
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		freed, err := Collect(ctx, c.st, policy, c.log)
		if err != nil && ctx.Err() == nil {
			c.log.Error("store GC failed", "err", err)
		}
		if freed > 0 {
			c.freed.Add(float64(freed))
			used, _ := c.st.Usage()
			c.log.Info("store GC evicted least recently used content", "bytes", freed, "store_bytes", used)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}
