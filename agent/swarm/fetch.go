package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// Swarming. A blob of several chunks is fetched as chunks
// from every provider that holds them, out of order, straight into the fetch's file. A chunk is
// a run of pieces (the unit of the chunk map, Client.span of them), asked for in one request; each
// piece is verified and landed as it arrives, so the local client and other peers get it
// without waiting for the rest of the chunk:
//
//   - Each provider is watched: a long-polled map request answers as soon as the provider holds
//     another piece, receives more, or its map grows, so holdings spread as fast as pieces do.
//   - For the chunks the local client reads next, a provider receiving the blob in order from
//     the origin may be asked for pieces it has not received yet when nobody holds them
//     (cut-through): it sends them as they land. Its map answers say which pieces it holds and
//     receives. Other chunks come from providers holding them (see startMode).
//   - The chunks just past the contiguous prefix come first (the local client streams that
//     prefix in order from its first byte); then the rarest chunks among the providers watched.
//   - A provider gets at most perPeerInFlight requests from this fetch, and the one with the best
//     measured rate is chosen among those holding a chunk. A provider already sending a chunk to
//     enough peers answers busy (transfer.Server's super-seeding); the chunk is taken from those
//     peers once they hold it, or asked for again shortly.
//   - When every missing chunk is in flight, the last ones are also asked of a second provider
//     (endgame); the first to verify wins.
//   - A provider that fails, stalls, or delivers below its Deadline is dropped from the fetch;
//     one that sends a chunk failing verification is blamed exactly (see settle).
//
// Bytes land in the file as they arrive and are hashed on the way, from the map's state before
// the piece; a piece counts as held (served to peers, released to the local client) only once
// it verifies. A piece whose end state the map does not have yet (its sender is still receiving
// the blob in order from the origin) waits for the sender's map to grow. Endgame duplicates land
// in memory and are written only if they win.
const (
	// maxInFlight caps the chunk requests one fetch has open, and nodeInFlight those of all the
	// node's fetches together: enough to keep a link busy, few enough that each chunk gets a
	// fair share of it and arrives well within its deadline (see Deadline).
	maxInFlight  = 4
	nodeInFlight = 6
	// perPeerInFlight caps the requests one fetch has open at one provider, so that a swarm
	// spreads its load over every provider instead of queueing at the first.
	perPeerInFlight = 2
	// orderedWindow is how many chunks past the contiguous prefix go before rarest-first.
	orderedWindow = 2
	// maxWatched bounds the providers a fetch watches at once, besides at most maxHintedWatched
	// named by busy answers (transfer.ChunkBusyError) about the blob's first piece, or from a
	// seed about a piece no other provider is known to hold: a provider that declines a piece
	// names the peers it sent it to, and hearing at once when they hold it is what keeps the
	// first byte from waiting on provider records, and the last pieces from waiting out a seed's
	// hold. maxHinted bounds the peers a fetch takes from such answers in all.
	maxWatched       = 8
	maxHintedWatched = 4
	maxHinted        = 16
	// rediscoverEvery is how often a fetch looks for providers that appeared since it began
	// (nodes that started on the same blob announce it at their first chunk).
	rediscoverEvery = time.Second
	// busyBackoff is how long a provider whose upload slots are taken is not asked for anything,
	// and chunkBusyBackoff how long a provider that declined a chunk is not asked for that chunk:
	// it is sending it, or has sent it, to others, who will hold it in a moment
	// (transfer.ErrChunkBusy, transfer.WithSuperSeeding).
	busyBackoff      = 200 * time.Millisecond
	chunkBusyBackoff = time.Second
	// starveStalls bounds how long a slow swarm is waited for, in Deadline.Stall: a fetch whose
	// providers keep gaining chunks (the coordinator's origin stream included) but in which no
	// chunk lands here gives up after that all the same, so that providers claiming progress
	// they never deliver cannot hold it forever (see stalled).
	starveStalls = 4
	// seedAfterRefusals is how many busy answers other providers give for a chunk before a seed
	// is asked for it after all: a provider that claims chunks and never sends them cannot keep
	// the one that holds them away.
	seedAfterRefusals = 4
	// watchErrors is how many failed watch requests in a row drop a provider.
	watchErrors = 3
	// watchPace is the least time between two watch requests to one provider once this node
	// holds a piece of the blob: a provider gains a piece every few tens of milliseconds in a
	// rollout, and an answer for each, at every watcher, cost more CPU (a stream and a map
	// each) than the news was worth. Before the first piece, the first byte waits on the news,
	// and each gain is heard of at once.
	watchPace = 200 * time.Millisecond
	// endgameAfter is the least time a last chunk's request runs before a second provider is
	// asked for it too.
	endgameAfter = time.Second
)

// swarmFetch fetches one blob from its providers. The fetch's goroutine runs Fill, which
// schedules; one goroutine per chunk request and per watched provider does the I/O.
type swarmFetch struct {
	c     *Client
	d     digest.Digest
	provs []peer.AddrInfo // from the first lookup
	// size is the blob's bound size (fetch.Sizer), -1 when none is known: then only a blob
	// sent whole in the first chunk, verified by its digest, is taken.
	size int64
	// access is the repository and credential every request of this fetch carries.
	access credential.Access

	// Set up by firstChunk and loadMap, before Fill.
	failed map[peer.ID]bool // providers that failed before Fill

	mu      sync.Mutex
	m       *chunks.Map
	from    []peer.ID // from[j] is the provider whose map gave state j
	conf    []bool    // conf[j]: a second provider's map has state j too
	peers   map[peer.ID]*swarmPeer
	order   []peer.ID           // providers in the order found
	have    *chunks.Set         // pieces held
	jobs    map[int][]*chunkJob // by chunk
	suspect map[int]peer.ID     // sent piece i failing an unconfirmed map
	judge   map[int]peer.ID     // the provider of piece i's states, asked to settle a suspect
	used    map[peer.ID]int64
	seeds   map[peer.ID]bool
	refused map[int]int // busy answers for chunk i from providers other than seeds
	fatal   error
	last    time.Time // the last chunk landed (or the start)
	gained  time.Time // the last time a provider watched was heard to gain a chunk or a state
	prefix  int64     // the verified prefix when Fill returned
	resumed int64     // the prefix held when Fill began (from a partial file)
	events  chan struct{}
	wg      sync.WaitGroup
	stop    context.CancelFunc
	watched int  // providers watched, besides the hinted ones
	hintW   int  // hinted providers watched
	hintN   int  // peers taken from busy answers
	hints   bool // peers named by busy answers wait to be watched
	// mSum is the digest of s.m's encoding, for want.KnownDigest, computed once per complete map.
	mSum    digest.Digest
	mSumFor *chunks.Map
}

// swarmPeer is what a fetch knows of one provider.
type swarmPeer struct {
	id       peer.ID
	have     *chunks.Set // pieces held; nil until its map came in
	recv     *chunks.Set // pieces it is receiving (cut-through); with have
	mapLen   int
	inflight int
	rate     float64 // bytes/s, a moving average over the chunks it delivered
	measured bool
	failures int
	out      bool // dropped for the rest of this fetch
	watching bool
	hinted   bool      // named by a provider's busy answer as holding or receiving a chunk
	busy     time.Time // declined a chunk (all its upload slots taken): not asked until then
	// declined holds, by chunk, when a provider that declined it may be asked for it again.
	declined map[int]time.Time
}

// chunkJob is one chunk request in flight: pieces [a, b) of chunk c.
type chunkJob struct {
	c, a, b int
	p       peer.ID
	dup     bool // an endgame duplicate: lands in memory, written only if it wins
	started time.Time
	cancel  context.CancelFunc
	exited  chan struct{} // closed once the job no longer touches the file
}

var (
	_ fetch.Filler      = (*swarmFetch)(nil)
	_ fetch.StateSource = (*swarmFetch)(nil)
)

func newSwarmFetch(c *Client, d digest.Digest, provs []peer.AddrInfo, size int64, a credential.Access) *swarmFetch {
	return &swarmFetch{c: c, d: d, provs: provs, size: size, access: a, failed: map[peer.ID]bool{}}
}

func (s *swarmFetch) kick() {
	select {
	case s.events <- struct{}{}:
	default:
	}
}

// peer returns p's record, creating it.
func (s *swarmFetch) peer(p peer.ID) *swarmPeer {
	sp, ok := s.peers[p]
	if !ok {
		sp = &swarmPeer{id: p}
		s.peers[p] = sp
		s.order = append(s.order, p)
	}
	return sp
}

// usable reports whether p may be asked for anything.
func (s *swarmFetch) usable(sp *swarmPeer) bool {
	return !sp.out && s.c.penalties.Usable(s.d, sp.id)
}

// firstChunk fetches the first chunk from the first provider, for a blob that may be no larger:
// the whole blob, verified by its digest. It is a swarm request: a provider already sending the
// chunk declines, and the swarm then takes it from whoever receives it.
func (s *swarmFetch) firstChunk(ctx context.Context, p peer.ID) (io.ReadCloser, int64, bool) {
	ctx, cancel := context.WithTimeout(ctx, s.c.deadline.For(s.c.chunkSize))
	defer cancel()
	rng, err := s.c.transfer.GetChunk(ctx, p, s.d, 0, s.c.chunkSize, true)
	if err != nil {
		return nil, 0, false
	}
	defer rng.Close()
	rng.SetDeadline(time.Now().Add(s.c.deadline.For(s.c.chunkSize)))
	if s.size >= 0 && rng.Size != s.size {
		s.c.blameSize(p, s.d, rng.Size, s.size)
		s.failed[p] = true
		return nil, 0, false
	}
	n := rng.Length
	data := s.c.chunkBuf(n)
	if _, err := io.ReadFull(s.c.download.Reader(ctx, rng), data); err != nil {
		s.c.putChunkBuf(data)
		return nil, 0, false
	}
	// The whole blob, if it hashes to the digest: its size is then proven, whatever was claimed.
	if s.d.Algorithm().FromBytes(data) != s.d {
		if s.size >= 0 || rng.Size <= s.c.chunkSize {
			s.c.blame(p, s.d, errors.New("blob bytes do not match the digest"))
			s.failed[p] = true
		}
		s.c.putChunkBuf(data)
		return nil, 0, false
	}
	s.c.metrics.Providers.Observe(1)
	return io.NopCloser(bytes.NewReader(data)), int64(len(data)), true
}

// loadMap takes the chunk map and holdings from the first provider that answers, cross-checked
// against a second one when there is one: two providers disagreeing means one lies, and neither
// is used.
func (s *swarmFetch) loadMap(ctx context.Context) error {
	type result struct {
		p    peer.ID
		m    *chunks.Map
		have *chunks.Set
		recv *chunks.Set
	}
	var got []result
	for _, p := range s.provs {
		if len(got) == 2 {
			break
		}
		if s.failed[p.ID] {
			continue
		}
		mctx, cancel := context.WithTimeout(ctx, mapTimeout)
		h, err := s.c.transfer.Watch(mctx, p.ID, s.d, s.c.pieceSize, transfer.Want{})
		cancel()
		if err != nil {
			if errors.Is(err, chunks.ErrMismatch) {
				s.c.blame(p.ID, s.d, err)
			}
			s.failed[p.ID] = true
			continue
		}
		if h.Map.Size != s.size {
			s.c.blameSize(p.ID, s.d, h.Map.Size, s.size)
			s.failed[p.ID] = true
			continue
		}
		got = append(got, result{p: p.ID, m: h.Map, have: h.Have, recv: h.Recv})
	}
	switch {
	case len(got) == 0:
		return fmt.Errorf("%s: no provider answered with a chunk map: %w", s.d, errdefs.ErrUnavailable)
	case len(got) == 2 && (got[0].m.Size != got[1].m.Size || !got[0].m.Extends(got[1].m) && !got[1].m.Extends(got[0].m)):
		s.c.log.Warn("providers disagree on a chunk map; using neither", "digest", s.d, "peers", []peer.ID{got[0].p, got[1].p})
		return fmt.Errorf("%s: providers disagree on its chunk map: %w", s.d, errdefs.ErrUnavailable)
	}
	// Providers still fetching the blob send partial maps; start from the first and let the
	// second extend it (the states both sent are confirmed).
	s.peers = map[peer.ID]*swarmPeer{}
	s.m = got[0].m
	s.from = make([]peer.ID, s.m.Len())
	s.conf = make([]bool, s.m.Len())
	for j := range s.from {
		s.from[j] = got[0].p
	}
	s.conf[0] = true // the initial state is fixed
	for _, g := range got {
		s.learn(s.peer(g.p), g.m, g.have, g.recv)
	}
	return nil
}

// Fill fetches every chunk the fetch's file does not hold yet. It returns nil once all are
// held and verified, chunks.ErrMismatch when a chunk map proved forged, and ErrUnavailable when
// the providers cannot finish (the pipeline then resumes from the origin at the prefix held).
func (s *swarmFetch) Fill(ctx context.Context, f fetch.Sink) (err error) {
	ctx, s.stop = context.WithCancel(credential.NewContext(ctx, s.access))
	s.events = make(chan struct{}, 1)
	s.jobs = map[int][]*chunkJob{}
	s.suspect, s.judge = map[int]peer.ID{}, map[int]peer.ID{}
	s.used = map[peer.ID]int64{}
	s.last = time.Now()
	s.gained = s.last
	s.seeds = s.knownSeeds()
	s.refused = map[int]int{}
	defer func() {
		s.stop()
		s.wg.Wait()
		s.prefix = f.Written()
	}()
	s.mu.Lock()
	s.have = f.Held()
	s.resumed = f.Written()
	for _, info := range s.provs {
		if !s.failed[info.ID] {
			s.peer(info.ID)
		}
	}
	s.watchMore(ctx)
	s.mu.Unlock()

	lastLookup := time.Now()
	looking := false
	lookups := make(chan struct{}, 1)
	// The tick retries busy chunks and takes node slots other fetches released.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		if s.fatal != nil {
			s.mu.Unlock()
			return s.fatal
		}
		if s.have.Full() {
			s.mu.Unlock()
			return nil
		}
		if s.hints {
			s.hints = false
			s.watchMore(ctx)
		}
		s.schedule(ctx, f)
		idle := len(s.jobs) == 0
		alive := false
		for _, sp := range s.peers {
			alive = alive || s.usable(sp)
		}
		dead, starved := s.stalled(time.Now())
		s.mu.Unlock()
		switch {
		case idle && !alive:
			return fmt.Errorf("%s: no provider left with chunks to give: %w", s.d, errdefs.ErrUnavailable)
		case dead:
			return fmt.Errorf("%s: no chunk landed and no provider gained one for %s: %w", s.d, s.c.deadline.Stall, errdefs.ErrUnavailable)
		case starved:
			return fmt.Errorf("%s: no chunk landed for %s while the swarm gained chunks: %w", s.d, starveStalls*s.c.deadline.Stall, errdefs.ErrUnavailable)
		}
		if time.Since(lastLookup) >= rediscoverEvery && !looking {
			// In the background: a lookup can take seconds on a loaded DHT, and chunks must
			// keep being scheduled meanwhile.
			looking = true
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.discover(ctx)
				lookups <- struct{}{}
			}()
		}
		select {
		case <-s.events:
		case <-lookups:
			looking, lastLookup = false, time.Now()
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", s.d, ctx.Err())
		}
	}
}

// stalled tells a dead swarm from a slow one. Dead: no chunk landed here and no provider
// watched gained one for Deadline.Stall; the origin then resumes. Slow: providers keep gaining
// chunks (nodes receive them, the coordinator's origin stream advances) while this node gets
// busy answers, as in an overloaded rollout: it waits for them, since going to the origin would
// cost the origin a copy the swarm is about to hold; starved past starveStalls × Stall all the
// same. Called with s.mu held.
func (s *swarmFetch) stalled(now time.Time) (dead, starved bool) {
	progress := s.last
	if s.gained.After(progress) {
		progress = s.gained
	}
	stall := s.c.deadline.Stall
	return now.Sub(progress) > stall, now.Sub(s.last) > starveStalls*stall
}

// knownSeeds are the authorized seeds this node knows of: their uplinks are the scarcest, so a
// chunk that other providers hold is taken from those.
func (s *swarmFetch) knownSeeds() map[peer.ID]bool {
	out := map[peer.ID]bool{}
	for _, p := range s.c.router.KnownSeeds() {
		out[p] = true
	}
	return out
}

// landed records piece i, verified and in the file, as held. Called with s.mu held.
func (s *swarmFetch) landed(f fetch.Sink, i int, from peer.ID, n int64) {
	if err := f.MarkChunk(i, s.m); err != nil {
		// The map in use disagrees with the one the partial file was resumed by (recorded in an
		// earlier run): one of them is forged. The fetch fails, which discards the partial file,
		// and the next one starts over.
		s.c.log.Error("recording a verified chunk failed", "digest", s.d, "chunk", i, "err", err)
		if errors.Is(err, chunks.ErrMismatch) && s.fatal == nil {
			s.fatal = fmt.Errorf("%s: chunk map disagrees with the resumed partial: %w", s.d, err)
		}
		return
	}
	s.have.Add(i)
	s.used[from] += n
	s.last = time.Now()
	s.c.metrics.Bytes.Add(float64(n))
	// Publishing releases the new prefix to the local client and, from this first verified
	// piece on, provides the blob: peers fetching it at the same moment take what this node holds.
	f.Publish()
}

// Chunks and pieces: chunk c is pieces [c·span, (c+1)·span), the unit of a request.

// chunkCount is the number of chunks of the blob.
func (s *swarmFetch) chunkCount() int { return (s.have.Len() + s.c.span - 1) / s.c.span }

// missing returns the first run of pieces of chunk c not held, [a, b); a == b when it is whole.
// Called with s.mu held.
func (s *swarmFetch) missing(c int) (a, b int) {
	a, end := c*s.c.span, min((c+1)*s.c.span, s.have.Len())
	for a < end && s.have.Has(a) {
		a++
	}
	for b = a; b < end && !s.have.Has(b); b++ {
	}
	return a, b
}

// offers reports whether sp holds piece i or is receiving it.
func offers(sp *swarmPeer, i int) bool {
	return sp.have != nil && (sp.have.Has(i) || sp.recv != nil && sp.recv.Has(i))
}

// runBytes is the offset and length of pieces [a, b).
func (s *swarmFetch) runBytes(a, b int) (off, n int64) {
	off, _ = s.m.Range(a)
	end, last := s.m.Range(b - 1)
	return off, end + last - off
}

// schedule starts chunk requests up to the caps. Called with s.mu held.
func (s *swarmFetch) schedule(ctx context.Context, f fetch.Sink) {
	count := s.chunkCount()
	inflight := 0
	for _, js := range s.jobs {
		inflight += len(js)
	}
	wanted := func(c int) bool {
		a, b := s.missing(c)
		return a < b && len(s.jobs[c]) == 0 && a < s.m.Len()
	}
	// The chunks the local client reads next, in order.
	first := 0
	for first < s.have.Len() && s.have.Has(first) {
		first++
	}
	next := first / s.c.span
	for c := next; c < min(next+orderedWindow, count) && inflight < maxInFlight; c++ {
		if wanted(c) && s.start(ctx, f, c, cutThrough) {
			inflight++
		}
	}
	// Then the rarest among the providers watched, ties broken at random so that requesters
	// spread over the chunks.
	type cand struct{ c, avail int }
	var cands []cand
	now := time.Now()
	open := 0 // chunks not held whole
	for c := next; c < count; c++ {
		a, b := s.missing(c)
		if a < b {
			open++
		}
		if inflight >= maxInFlight || !wanted(c) {
			continue
		}
		avail := 0
		for _, sp := range s.peers {
			if s.usable(sp) && sp.have != nil && sp.have.Has(a) && !sp.busy.After(now) {
				avail++
			}
		}
		if avail > 0 {
			cands = append(cands, cand{c, avail})
		}
	}
	rand.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	slices.SortStableFunc(cands, func(a, b cand) int { return a.avail - b.avail })
	for _, c := range cands {
		if inflight >= maxInFlight {
			break
		}
		if s.start(ctx, f, c.c, fromHolders) {
			inflight++
		}
	}
	// Endgame: every missing chunk is on its way; ask a second provider for the ones whose
	// request is slow (a duplicate spends a provider's uplink, the scarcest thing in a rollout,
	// so a request on course is left alone).
	if inflight < maxInFlight && open <= inflight {
		for c, js := range s.jobs {
			if inflight >= maxInFlight {
				break
			}
			if a, b := s.missing(c); len(js) == 1 && a < b && s.lagging(js[0], now) && s.start(ctx, f, c, duplicate) {
				inflight++
			}
		}
	}
}

// lagging reports whether a chunk request has run past twice the time its provider's measured
// rate predicts (at least endgameAfter).
func (s *swarmFetch) lagging(jb *chunkJob, now time.Time) bool {
	want := endgameAfter
	if sp := s.peers[jb.p]; sp.measured && sp.rate > 0 {
		_, n := s.runBytes(jb.a, jb.b)
		want = max(want, time.Duration(2*float64(n)/sp.rate*float64(time.Second)))
	}
	return now.Sub(jb.started) > want
}

// How start may choose a provider for a chunk.
type startMode int

const (
	// cutThrough takes the pieces from a provider still receiving them (in order, from the
	// origin) when nobody holds them: for the chunks the local client reads next, whose delay is
	// its time to first byte.
	cutThrough startMode = iota
	// fromHolders takes them only from providers holding them. A provider still receiving a
	// piece sends no faster than it receives it, and keeps one of its few upload slots waiting
	// meanwhile: measured in the rollout benchmark, cut-through for every chunk cost more
	// (in CPU and in the swarm's throughput) than the hop it saved.
	fromHolders
	// duplicate is an endgame duplicate, asked only of a provider holding every piece of it:
	// one still receiving them might be receiving them from this node.
	duplicate
)

// start asks the best provider of chunk c's first missing piece for the run of missing pieces it
// has from there (see startMode). Called with s.mu held.
func (s *swarmFetch) start(ctx context.Context, f fetch.Sink, c int, mode startMode) bool {
	now := time.Now()
	dup := mode == duplicate
	has := func(sp *swarmPeer, i int) bool {
		if mode == cutThrough {
			return offers(sp, i)
		}
		return sp.have != nil && sp.have.Has(i)
	}
	a, b := s.missing(c)
	if a >= b {
		return false
	}
	if j, ok := s.judge[a]; ok {
		// Only the provider of the piece's states can settle a suspect; if it cannot be asked,
		// the piece comes from anyone and the suspect goes unjudged (dropped, not blamed).
		if sp := s.peers[j]; sp == nil || !s.usable(sp) || !has(sp, a) {
			delete(s.judge, a)
			delete(s.suspect, a)
		}
	}
	// A seed's uplink is the scarcest: it is asked only for chunks no other provider holds (or to
	// settle a suspect whose states it gave), even if those others are busy now, unless they
	// refused the chunk seedAfterRefusals times.
	_, judged := s.judge[a]
	avoidSeeds := !judged && s.refused[c] < seedAfterRefusals && slices.ContainsFunc(s.order, func(p peer.ID) bool {
		sp := s.peers[p]
		return !s.seeds[p] && s.usable(sp) && has(sp, a)
	})
	var best *swarmPeer
	bestScore := -1.0
	for _, p := range s.order {
		sp := s.peers[p]
		if !s.usable(sp) || !has(sp, a) || sp.inflight >= perPeerInFlight || sp.busy.After(now) ||
			sp.declined[c].After(now) || avoidSeeds && s.seeds[p] {
			continue
		}
		if dup && !holdsAll(sp, a, b) {
			continue
		}
		if j, ok := s.judge[a]; ok && p != j {
			continue
		}
		if slices.ContainsFunc(s.jobs[c], func(jb *chunkJob) bool { return jb.p == p }) {
			continue
		}
		// Providers holding the piece before those still receiving it (which send no faster
		// than they receive, and keep an upload slot waiting meanwhile); then unmeasured
		// providers (to measure them), then the fastest; ties at random.
		score := sp.rate
		if !sp.measured {
			score = 1e18
		}
		if sp.have.Has(a) {
			score += 1e19
		}
		score += rand.Float64()
		if score > bestScore {
			best, bestScore = sp, score
		}
	}
	if best == nil {
		return false
	}
	if !dup {
		// Only the pieces it holds, or, from one receiving the first, those it receives: a
		// request for pieces it is not receiving would wait in vain, and one for pieces a holder
		// is still receiving would keep its upload slot waiting.
		holds := best.have.Has(a)
		e := a + 1
		for e < b && (best.have.Has(e) || !holds && offers(best, e)) {
			e++
		}
		b = e
		if a == 0 && mode == cutThrough {
			// The blob's first piece, which the local client waits on (its time to first byte),
			// is asked for alone: a provider sends a range to one swarm requester at a time (and
			// an original holder once), so that range is free again after one piece rather than a
			// whole chunk, and the first byte spreads through the swarm a piece at a time.
			b = 1
		}
	}
	select {
	case s.c.chunkSlots <- struct{}{}:
	default:
		return false // the node's link is spoken for; the next round tries again
	}
	jctx, cancel := context.WithCancel(ctx)
	jb := &chunkJob{c: c, a: a, b: b, p: best.id, dup: dup, cancel: cancel, exited: make(chan struct{}), started: now}
	s.jobs[c] = append(s.jobs[c], jb)
	best.inflight++
	s.wg.Add(1)
	go s.run(jctx, f, jb)
	return true
}

// holdsAll reports whether sp holds pieces [a, b).
func holdsAll(sp *swarmPeer, a, b int) bool {
	for i := a; i < b; i++ {
		if sp.have == nil || !sp.have.Has(i) {
			return false
		}
	}
	return true
}

// pieceError is a piece of a chunk request failing verification.
type pieceError struct {
	i   int
	err error
}

func (e *pieceError) Error() string { return fmt.Sprintf("piece %d: %v", e.i, e.err) }
func (e *pieceError) Unwrap() error { return e.err }

// run fetches a run of pieces and verifies each on the way in, landing it as soon as it
// verifies (a duplicate's only at the end, if it wins).
func (s *swarmFetch) run(ctx context.Context, f fetch.Sink, jb *chunkJob) {
	defer s.wg.Done()
	defer jb.cancel()
	start := time.Now()
	s.mu.Lock()
	off, n := s.runBytes(jb.a, jb.b)
	s.mu.Unlock()
	var buf []byte // a duplicate's bytes
	err := func() error {
		defer close(jb.exited)
		ctx, cancel := context.WithTimeout(ctx, s.c.deadline.For(n))
		defer cancel()
		rng, err := s.c.transfer.GetChunk(ctx, jb.p, s.d, off, n, false)
		if err != nil {
			return err
		}
		defer rng.Close()
		if rng.Size != s.size {
			return &sizeLie{claimed: rng.Size}
		}
		if d, ok := ctx.Deadline(); ok {
			rng.SetDeadline(d)
		}
		body := s.c.download.Reader(ctx, rng)
		if jb.dup {
			buf = s.c.chunkBuf(n)
			if _, err := io.ReadFull(body, buf); err != nil {
				return err
			}
		}
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		for i := jb.a; i < jb.b; i++ {
			s.mu.Lock()
			v, err := s.m.Begin(i)
			poff, pn := s.m.Range(i)
			s.mu.Unlock()
			if err != nil {
				return err
			}
			if jb.dup {
				v.Write(buf[poff-off : poff-off+pn])
			}
			for got := int64(0); got < pn && !jb.dup; {
				// A full buffer per write, not whatever one stream read returned (a few TLS
				// records): the piece lands only when it verifies, so nothing waits for the
				// filling, and the file takes a quarter of a piece in one write.
				k, rerr := io.ReadFull(body, (*bp)[:min(int64(len(*bp)), pn-got)])
				if k > 0 {
					if _, err := f.WriteAt((*bp)[:k], poff+got); err != nil {
						return err
					}
					v.Write((*bp)[:k])
					got += int64(k)
				}
				if rerr != nil {
					return rerr
				}
			}
			if err := s.check(ctx, jb.p, i, v); err != nil {
				return &pieceError{i: i, err: err}
			}
			if !jb.dup {
				s.landPiece(f, i, jb.p, pn)
			}
		}
		return nil
	}()
	if err != nil && ctx.Err() != nil {
		err = errLost // stopped: another request landed the chunk, or the fetch ended
	}
	if err == nil && jb.dup {
		err = s.landDuplicate(f, jb, buf, off)
	}
	if buf != nil {
		s.c.putChunkBuf(buf)
	}
	s.settle(f, jb, err, n, time.Since(start))
}

// check verifies a piece once the map has its end state. A sender still receiving the blob in
// order from the origin sends a piece's bytes as they arrive and has its end state when the last
// one did: its map is asked for it (waiting there a few seconds at most), so the piece is
// checked at once, whether or not the sender is watched. ctx bounds the wait.
func (s *swarmFetch) check(ctx context.Context, p peer.ID, i int, v *chunks.Verifier) error {
	for {
		s.mu.Lock()
		v.Update(s.m)
		covered := v.Covered()
		sp := s.peers[p]
		out := sp.out
		s.mu.Unlock()
		if covered {
			return v.Check()
		}
		if out {
			return fmt.Errorf("%s: no state to verify a piece from %s: %w", s.d, p, errdefs.ErrUnavailable)
		}
		h, err := s.c.transfer.Watch(ctx, p, s.d, s.c.pieceSize, transfer.Want{MinStates: i + 2})
		if err != nil {
			return err
		}
		if h.Map.Size != s.size {
			return &sizeLie{claimed: h.Map.Size}
		}
		s.mu.Lock()
		s.learn(sp, h.Map, h.Have, h.Recv)
		s.mu.Unlock()
	}
}

// landPiece records a piece a request verified in place.
func (s *swarmFetch) landPiece(f fetch.Sink, i int, from peer.ID, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.have.Has(i) {
		s.landed(f, i, from, n)
	}
	s.judged(i, from)
}

// landDuplicate writes the pieces of a verified endgame duplicate that were not landed
// meanwhile: the other requests for its chunk are stopped first, so no other bytes reach their
// place.
func (s *swarmFetch) landDuplicate(f fetch.Sink, jb *chunkJob, buf []byte, off int64) error {
	s.mu.Lock()
	var others []*chunkJob
	for _, o := range s.jobs[jb.c] {
		if o != jb {
			others = append(others, o)
			o.cancel()
		}
	}
	s.mu.Unlock()
	for _, o := range others {
		<-o.exited
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	won := false
	for i := jb.a; i < jb.b; i++ {
		poff, pn := s.m.Range(i)
		if s.have.Has(i) {
			continue
		}
		if _, err := f.WriteAt(buf[poff-off:poff-off+pn], poff); err != nil {
			continue // landed by the other request after all
		}
		s.landed(f, i, jb.p, pn)
		s.judged(i, jb.p)
		won = true
	}
	if !won {
		return errLost
	}
	return nil
}

// sizeLie is a provider answering a chunk request with another size of the blob than the bound
// one.
type sizeLie struct{ claimed int64 }

func (e *sizeLie) Error() string { return fmt.Sprintf("peer says the blob is %d bytes", e.claimed) }

// errLost is an endgame request beaten by another: not the provider's fault.
var errLost = errors.New("chunk landed from another provider")

// settle records a chunk request's outcome.
func (s *swarmFetch) settle(f fetch.Sink, jb *chunkJob, err error, n int64, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.kick()
	<-s.c.chunkSlots
	sp := s.peers[jb.p]
	sp.inflight--
	c := jb.c
	s.jobs[c] = slices.DeleteFunc(s.jobs[c], func(o *chunkJob) bool { return o == jb })
	if len(s.jobs[c]) == 0 {
		delete(s.jobs, c)
	}
	var lie *sizeLie
	var bad *pieceError
	s.c.log.Debug("chunk request done", "digest", s.d, "chunk", c, "pieces", jb.b-jb.a, "peer", jb.p, "dup", jb.dup, "took", took, "err", err)
	switch {
	case err == nil:
		bps := float64(n) / max(took.Seconds(), 1e-6)
		if sp.measured {
			bps = 0.7*sp.rate + 0.3*bps
		}
		sp.rate, sp.measured, sp.failures = bps, true, 0
		if a, b := s.missing(c); a == b {
			for _, o := range s.jobs[c] {
				o.cancel()
			}
		}
	case errors.Is(err, errLost):
		// Beaten in the endgame, or stopped because another request landed the chunk.
	case errors.Is(err, errdefs.ErrNoSpace):
		// This node's disk is full: no peer's fault, and no other peer would do better.
		if s.fatal == nil {
			s.fatal = err
		}
	case errors.Is(err, transfer.ErrBusy):
		if !errors.Is(err, transfer.ErrChunkBusy) {
			sp.busy = time.Now().Add(busyBackoff) // its slots are taken
		}
		var cb *transfer.ChunkBusyError
		if errors.As(err, &cb) && (jb.a == 0 && s.have.Count() == 0 || s.seeds[jb.p] && !s.heldElsewhere(jb.p, jb.a)) {
			s.hinted(cb.Holders)
		}
		if !s.seeds[jb.p] {
			s.refused[c]++
		}
		if sp.declined == nil {
			sp.declined = map[int]time.Time{}
		}
		sp.declined[c] = time.Now().Add(chunkBusyBackoff)
	case errors.As(err, &lie):
		// The map's size is the bound one: a provider saying otherwise lies about the blob.
		sp.out = true
		s.c.blameSize(jb.p, s.d, lie.claimed, s.m.Size)
	case errors.As(err, &bad) && errors.Is(err, chunks.ErrMismatch):
		s.mismatch(sp, bad.i, err)
	default:
		sp.failures++
		if sp.failures >= 2 || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errdefs.ErrNotFound) {
			// Failing, or slower than the Deadline: the rest of the blob comes from others.
			sp.out = true
			s.c.log.Debug("dropping a provider from the fetch", "peer", jb.p, "digest", s.d, "chunk", c, "err", err)
		}
	}
}

// mismatch handles piece i from sp failing verification. Blame is exact: when the piece's states
// were confirmed by two providers, or came from sp itself, the piece's sender is blamed. Otherwise
// the sender is a suspect, and the provider of the states is asked for the same piece: if its own
// piece verifies, the suspect lied; if not, the states were forged, so everything verified
// against them is suspect and the fetch fails. Called with s.mu held.
func (s *swarmFetch) mismatch(sp *swarmPeer, i int, err error) {
	sp.out = true
	src := s.stateSource(i)
	switch {
	case s.confirmed(i):
		s.c.blame(sp.id, s.d, err)
	case sp.id == src:
		s.c.blame(sp.id, s.d, err)
		if _, ok := s.suspect[i]; ok {
			s.fatal = fmt.Errorf("%s: chunk map from %s: %w", s.d, sp.id, chunks.ErrMismatch)
		}
		delete(s.suspect, i)
		delete(s.judge, i)
	default:
		s.suspect[i] = sp.id
		s.judge[i] = src
	}
}

// judged settles a suspicion about piece i now that p's copy of it verified: if p provided the
// piece's states, the suspect's copy was the lie. Called with s.mu held.
func (s *swarmFetch) judged(i int, p peer.ID) {
	if sus, ok := s.suspect[i]; ok && s.judge[i] == p {
		s.c.blame(sus, s.d, fmt.Errorf("piece %d failed verification", i))
	}
	delete(s.suspect, i)
	delete(s.judge, i)
}

// stateSource is the provider whose map gave the states piece i is verified against (the later
// one, which a forger would have to fake).
func (s *swarmFetch) stateSource(i int) peer.ID {
	return s.from[min(i+1, len(s.from)-1)]
}

// confirmed reports whether a second provider vouched for piece i's states.
func (s *swarmFetch) confirmed(i int) bool {
	last := i == s.have.Len()-1
	return s.conf[i] && (last || (i+1 < len(s.conf) && s.conf[i+1]))
}

// learn takes a provider's map and holdings (pieces held and being received). A map that
// disagrees with ours means one of the two lies: that provider is not used (and not blamed: only
// pieces prove a lie). A longer map that agrees extends ours. Called with s.mu held.
func (s *swarmFetch) learn(sp *swarmPeer, m *chunks.Map, have, recv *chunks.Set) {
	if !m.Extends(s.m) && !s.m.Extends(m) {
		sp.out = true
		s.c.log.Warn("a provider's chunk map disagrees with the one in use; not using it", "peer", sp.id, "digest", s.d)
		return
	}
	if m.Len() > s.m.Len() {
		for j := s.m.Len(); j < m.Len(); j++ {
			s.from = append(s.from, sp.id)
			s.conf = append(s.conf, false)
		}
		s.m = m
	}
	for j := range min(m.Len(), len(s.from)) {
		if s.from[j] != sp.id {
			s.conf[j] = true
		}
	}
	if sp.have != nil && (have.Count() > sp.have.Count() || m.Len() > sp.mapLen) {
		s.gained = time.Now() // the swarm moves: a slow swarm, not a dead one
	}
	sp.have, sp.recv, sp.mapLen = have, recv, m.Len()
}

// hinted takes the peers a provider's busy answer named as holding or receiving a piece, when
// the piece is the blob's first and this node holds none yet (its local client waits for the
// first byte), or when a seed answered and no other provider is known to hold it (see
// heldElsewhere); otherwise provider records and watches find holders soon enough, and every
// extra watch and request costs CPU on both ends. maxHinted in all: they become providers of the
// fetch, watched apart from the others (Fill starts the watches). A hint is one peer's word: a
// named peer that cannot be reached or holds nothing is forgotten (not dropped, so that a
// provider record naming it later still counts), and whatever it sends is verified like any
// provider's. Called with s.mu held.
func (s *swarmFetch) hinted(ps []peer.ID) {
	self := s.c.router.ID()
	for _, p := range ps {
		if p == self || s.hintN >= maxHinted {
			continue
		}
		// A peer found by a lookup but not watched (all 8 watches are taken, as in a rollout where
		// every node provides the blob from its first piece) is watched as a hinted one: it is
		// the one peer known to be getting the piece.
		sp, known := s.peers[p]
		if known && (sp.hinted || sp.watching || sp.out) {
			continue
		}
		if !known {
			sp = s.peer(p)
		}
		sp.hinted = true
		s.hintN++
		s.hints = true
	}
}

// heldElsewhere reports whether a usable provider other than p is known to hold piece i. A
// seed's busy answer about a piece nobody else is known to hold names the peer it sent the piece
// to: without it, this node would wait out the seed's hold (15 s) for a piece a peer it does not
// watch has had all along, which is how the last pieces of a rollout from one seed trailed the
// rest by up to two holds. Called with s.mu held.
func (s *swarmFetch) heldElsewhere(p peer.ID, i int) bool {
	for q, sp := range s.peers {
		if q != p && s.usable(sp) && sp.have != nil && sp.have.Has(i) {
			return true
		}
	}
	return false
}

// mapDigest is the digest of the complete map in use. Called with s.mu held.
func (s *swarmFetch) mapDigest() digest.Digest {
	if s.mSumFor != s.m {
		b, _ := s.m.MarshalBinary()
		s.mSum, s.mSumFor = digest.FromBytes(b), s.m
	}
	return s.mSum
}

// forget removes a hinted peer that never answered a watch. Called with s.mu held.
func (s *swarmFetch) forget(sp *swarmPeer) {
	delete(s.peers, sp.id)
	s.order = slices.DeleteFunc(s.order, func(p peer.ID) bool { return p == sp.id })
	s.c.router.Unprotect(sp.id, "shoal-transfer")
}

// watchMore starts watching providers: up to maxWatched of those found by lookups, and up to
// maxHintedWatched of those named by busy answers. Called with s.mu held.
func (s *swarmFetch) watchMore(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	for _, p := range s.order {
		sp := s.peers[p]
		n, limit := &s.watched, maxWatched
		if sp.hinted {
			n, limit = &s.hintW, maxHintedWatched
		}
		if *n >= limit || sp.watching || !s.usable(sp) || (sp.have != nil && sp.have.Full()) {
			continue
		}
		sp.watching = true
		*n++
		s.c.router.Protect(p, "shoal-transfer")
		s.wg.Add(1)
		go s.watch(ctx, sp)
	}
}

// watch keeps a provider's holdings current: each request waits at the provider until it holds
// or receives one more piece or its map grows, so a gain is heard of at once.
func (s *swarmFetch) watch(ctx context.Context, sp *swarmPeer) {
	defer s.wg.Done()
	errs := 0
	gone := false // a hinted peer that never answered: forgotten, not dropped
	defer func() {
		s.mu.Lock()
		sp.watching = false
		if sp.hinted {
			s.hintW--
		} else {
			s.watched--
		}
		if gone {
			s.forget(sp)
		}
		s.watchMore(ctx)
		s.mu.Unlock()
		s.kick()
	}()
	for ctx.Err() == nil {
		s.mu.Lock()
		if !s.usable(sp) {
			s.mu.Unlock()
			return
		}
		// One more piece offered (held or being received), or one more state. Not one more
		// piece held: a piece this node already knows the provider is receiving can be asked
		// for anyway, and an answer (a stream and a map) for every piece landed would cost a
		// chunk's worth of them for every chunk, at every watcher.
		var want transfer.Want
		if sp.have != nil {
			if sp.mapLen < sp.have.Len() {
				want.MinStates = sp.mapLen + 1
			}
			offered := sp.have.Clone()
			offered.AddAll(sp.recv)
			want.MinOffer = offered.Count() + 1
			if sp.mapLen == s.m.Len() && s.m.Complete() {
				// Its complete map came in and agreed with ours: while it stays the same, the
				// answers need only its holdings.
				want.Known, want.KnownDigest = s.m, s.mapDigest()
			}
		}
		cs, size := s.m.ChunkSize, s.m.Size // s.m is replaced under s.mu as maps grow
		s.mu.Unlock()
		hctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		h, err := s.c.transfer.Watch(hctx, sp.id, s.d, cs, want)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errs++; errs >= watchErrors || errors.Is(err, errdefs.ErrNotFound) {
				s.mu.Lock()
				if sp.hinted && sp.have == nil {
					gone = true
				} else {
					sp.out = true
				}
				s.mu.Unlock()
				return
			}
			select {
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		errs = 0
		m, have := h.Map, h.Have
		if m.Size != size {
			s.mu.Lock()
			sp.out = true
			s.mu.Unlock()
			s.c.blameSize(sp.id, s.d, m.Size, size)
			return
		}
		s.mu.Lock()
		s.learn(sp, m, have, h.Recv)
		full := have.Full() && m.Complete()
		started := s.have.Count() > 0
		s.mu.Unlock()
		s.kick()
		if full {
			return // holds everything: nothing more to hear
		}
		if started {
			select {
			case <-time.After(watchPace):
			case <-ctx.Done():
			}
		}
	}
}

// discover adds providers that appeared since the fetch began.
func (s *swarmFetch) discover(ctx context.Context) {
	found, err := s.c.Providers(ctx, s.d)
	if err != nil {
		return
	}
	seeds := s.knownSeeds()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seeds = seeds
	for _, info := range found {
		if _, ok := s.peers[info.ID]; !ok {
			s.peer(info.ID)
		}
	}
	s.watchMore(ctx)
}

// stateSuppliers are the providers whose maps gave the states up to the prefix Fill left, beyond
// what a partial file brought: if another source resumes from there and the blob fails its
// digest, one of those states was forged, by one of them or by whoever they relayed it from.
func (s *swarmFetch) stateSuppliers() []peer.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []peer.ID
	for j := int(s.resumed/s.m.ChunkSize) + 1; j <= int(s.prefix/s.m.ChunkSize) && j < len(s.from); j++ {
		if !slices.Contains(out, s.from[j]) {
			out = append(out, s.from[j])
		}
	}
	return out
}

// Close ends the fetch's requests and records how many providers delivered.
func (s *swarmFetch) Close() error {
	if s.stop != nil {
		s.stop()
	}
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.peers {
		s.c.router.Unprotect(p, "shoal-transfer")
	}
	if n := len(s.used); n > 0 {
		s.c.metrics.Providers.Observe(float64(n))
		s.c.log.Debug("blob chunks came from peers", "digest", s.d, "peers", n)
	}
	return nil
}
