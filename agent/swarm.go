package agent

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-oci/shoal/internal/chunks"
)

const (
	// prefetchWindow is how many chunks ahead of the local client's read position are fetched at
	// once, each from its own provider where there are several.
	prefetchWindow = 2
	// perPeerInFlight caps the chunk requests one node has open at one provider, so that a
	// swarm spreads its load over every provider instead of queueing at the first.
	perPeerInFlight = 2
	// rediscoverEvery is how often a transfer looks for providers that appeared since it began
	// (nodes that started on the same blob announce it after their first chunk).
	rediscoverEvery = time.Second
)

// swarm is the prefetching state of a peerReader. The reader's goroutine schedules chunks and
// consumes them in order; one goroutine per chunk in flight fetches and verifies it.
type swarm struct {
	mu       sync.Mutex
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	slots    map[int]*slot
	inflight map[peer.ID]int
	holds    map[peer.ID]int // chunks a provider is known to hold (the prefix its map covers)
	rate     map[peer.ID]float64
	bad      map[peer.ID]bool // failed a prefetch: left to the reader's own, careful path
	probing  map[peer.ID]bool
	lastSeen time.Time
}

type slot struct {
	done chan struct{}
	data []byte
	err  error
	from peer.ID
}

func (r *peerReader) initSwarm() {
	if r.sw.slots != nil {
		return
	}
	r.sw.ctx, r.sw.cancel = context.WithCancel(r.ctx)
	r.sw.slots = map[int]*slot{}
	r.sw.inflight = map[peer.ID]int{}
	r.sw.holds = map[peer.ID]int{r.mapFrom: held(r.m)}
	r.sw.rate = map[peer.ID]float64{}
	r.sw.bad = map[peer.ID]bool{}
	r.sw.probing = map[peer.ID]bool{}
	for p, m := range r.mapsSeen {
		r.sw.holds[p] = held(m)
	}
	// lastSeen stays zero: the first prefetch probes every provider the lookup found.
}

// held is the number of chunks a provider holds, judged by its map: all for a complete map, the
// chunks before the last state for a partial one.
func held(m *chunks.Map) int {
	if m.Complete() {
		return m.Len()
	}
	return m.Len() - 1
}

// takePrefetched returns chunk i if a prefetch fetched and verified it. It waits for one in
// flight; a failed one is dropped, and the reader fetches the chunk itself.
func (r *peerReader) takePrefetched(i int) ([]byte, bool) {
	r.sw.mu.Lock()
	s, ok := r.sw.slots[i]
	r.sw.mu.Unlock()
	if !ok {
		return nil, false
	}
	select {
	case <-s.done:
	case <-r.ctx.Done():
		return nil, false
	}
	r.sw.mu.Lock()
	delete(r.sw.slots, i)
	r.sw.mu.Unlock()
	if s.err != nil {
		return nil, false
	}
	r.used[s.from] = true
	return s.data, true
}

// prefetch schedules the chunks of the window starting at chunk from, each at the fastest
// provider known to hold it that has room.
func (r *peerReader) prefetch(from int) {
	r.initSwarm()
	r.discover()
	r.sw.mu.Lock()
	defer r.sw.mu.Unlock()
	count := chunks.Count(r.m.Size, r.m.ChunkSize)
	for j := from; j < min(from+prefetchWindow, count); j++ {
		if _, ok := r.sw.slots[j]; ok {
			continue
		}
		p, ok := r.pickLocked(j)
		if !ok {
			return
		}
		s := &slot{done: make(chan struct{}), from: p}
		r.sw.slots[j] = s
		r.sw.inflight[p]++
		r.sw.wg.Add(1)
		go r.fetchChunk(j, p, s)
	}
}

func (r *peerReader) pickLocked(j int) (peer.ID, bool) {
	var best peer.ID
	bestRate := -1.0
	for _, info := range r.provs {
		p := info.ID
		if r.failed[p] || r.sw.bad[p] || r.sw.inflight[p] >= perPeerInFlight || r.sw.holds[p] <= j || r.a.penalties.penalized(p) {
			continue
		}
		// Unmeasured providers are tried first; then the fastest; ties broken at random.
		rate, measured := r.sw.rate[p]
		if !measured {
			rate = 1e18 + rand.Float64()
		}
		if rate > bestRate {
			best, bestRate = p, rate
		}
	}
	return best, best != ""
}

// fetchChunk fetches chunk j from p and verifies it against the map as it stands.
func (r *peerReader) fetchChunk(j int, p peer.ID, s *slot) {
	defer r.sw.wg.Done()
	start := time.Now()
	r.sw.mu.Lock()
	m := r.m
	r.sw.mu.Unlock()
	off, n := m.Range(j)
	ctx, cancel := context.WithTimeout(r.sw.ctx, chunkDeadline(n))
	defer cancel()
	data, err := r.getChunk(ctx, p, off, n)
	if err == nil {
		err = m.Verify(j, data)
		if err != nil && (p == r.mapFrom || r.mapConfirmed) {
			r.a.blamePeer(p, r.d, err)
		}
	}
	r.sw.mu.Lock()
	r.sw.inflight[p]--
	if err != nil {
		// The reader fetches this chunk itself, with exact blame; keep this peer out of prefetching.
		r.sw.bad[p] = true
	} else {
		bps := float64(n) / max(time.Since(start).Seconds(), 1e-6)
		if old, ok := r.sw.rate[p]; ok {
			bps = 0.7*old + 0.3*bps
		}
		r.sw.rate[p] = bps
	}
	s.data, s.err = data, err
	r.sw.mu.Unlock()
	close(s.done)
}

func (r *peerReader) getChunk(ctx context.Context, p peer.ID, off, n int64) ([]byte, error) {
	rng, err := r.a.peers.Get(ctx, p, r.d, off, n)
	if err != nil {
		return nil, err
	}
	defer rng.Close()
	if rng.Size != r.m.Size {
		return nil, fmt.Errorf("peer %s says %d bytes, the map %d", p, rng.Size, r.m.Size)
	}
	if d, ok := ctx.Deadline(); ok {
		rng.SetDeadline(d)
	}
	data := r.a.chunkBuf(n)
	if _, err := io.ReadFull(rng, data); err != nil {
		r.a.putChunkBuf(data)
		return nil, err
	}
	return data, nil
}

// chunkBuf returns a buffer of n bytes, from a pool when n is the chunk size: a swarm of
// transfers otherwise leaves a trail of 4 MiB garbage that the collector reaches late.
func (a *Agent) chunkBuf(n int64) []byte {
	if n == a.cfg.ChunkSize {
		if b, ok := a.chunkPool.Get().(*[]byte); ok {
			return *b
		}
	}
	return make([]byte, n)
}

func (a *Agent) putChunkBuf(b []byte) {
	if int64(cap(b)) == a.cfg.ChunkSize {
		b = b[:cap(b)]
		a.chunkPool.Put(&b)
	}
}

// discover looks, at most once a second, for providers that appeared since the transfer began,
// and learns which chunks each holds from its chunk map (which must agree with ours).
func (r *peerReader) discover() {
	if time.Since(r.sw.lastSeen) < rediscoverEvery {
		return
	}
	r.sw.lastSeen = time.Now()
	found, err := r.a.providers(r.ctx, r.d)
	if err != nil {
		return
	}
	known := map[peer.ID]bool{}
	for _, p := range r.provs {
		known[p.ID] = true
	}
	for _, info := range found {
		if !known[info.ID] {
			r.provs = append(r.provs, info)
		}
	}
	r.sw.mu.Lock()
	defer r.sw.mu.Unlock()
	for _, info := range r.provs {
		p := info.ID
		if p == r.mapFrom || r.sw.probing[p] || r.sw.bad[p] || r.failed[p] {
			continue
		}
		if h := r.sw.holds[p]; h > 0 && h == chunks.Count(r.m.Size, r.m.ChunkSize) {
			continue // holds everything
		}
		r.sw.probing[p] = true
		r.sw.wg.Add(1)
		go r.probe(p)
	}
	if h := held(r.m); h > r.sw.holds[r.mapFrom] {
		r.sw.holds[r.mapFrom] = h
	}
}

// probe fetches p's map to learn what it holds.
func (r *peerReader) probe(p peer.ID) {
	defer r.sw.wg.Done()
	ctx, cancel := context.WithTimeout(r.sw.ctx, 3*time.Second)
	defer cancel()
	m, err := r.a.peers.Map(ctx, p, r.d, r.m.ChunkSize)
	r.sw.mu.Lock()
	defer r.sw.mu.Unlock()
	r.sw.probing[p] = false
	if err != nil {
		return
	}
	if !m.Extends(r.m) && !r.m.Extends(m) {
		r.sw.bad[p] = true // disagrees with our map: one of the two lies; not this one's chunks
		return
	}
	r.sw.holds[p] = held(m)
}

// stopPrefetch ends every prefetch and waits for them.
func (r *peerReader) stopPrefetch() {
	if r.sw.cancel == nil {
		return
	}
	r.sw.cancel()
	r.sw.wg.Wait()
	for _, s := range r.sw.slots {
		if s.err == nil && s.data != nil {
			r.a.putChunkBuf(s.data)
		}
	}
	r.sw.slots = nil
}
