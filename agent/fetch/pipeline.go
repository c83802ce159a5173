// Package fetch is a node's fetch pipeline: it brings a blob that is not committed locally into
// the store from the first source that has it (peers, then the origin), once per digest however
// many clients ask, and lets every client read it while it arrives.
//
// A fetch lands bytes in a partial file of the store. Sources write through a Sink; the
// pipeline alone publishes progress (to local clients and, by announcing the blob, to the
// cluster), verifies the whole blob, releases its last byte and commits it. docs/architecture.md
// describes the pipeline and why the last byte is held back.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/throttle"
)

// Announcer tells the cluster what this node holds. Both methods return at once (announcing
// runs in the background) and must be safe for concurrent use.
type Announcer interface {
	Announce(d digest.Digest)
	Withdraw(d digest.Digest)
}

// Collector is asked for a garbage collection pass after each commit, without waiting for it.
type Collector interface {
	Kick()
}

// Metrics are the pipeline's instruments, created and registered by the node.
type Metrics struct {
	// Duration observes whole fetches by source; Bytes counts bytes received by source;
	// VerifyFailures counts content discarded by source; InFlight gauges fetches in progress.
	Duration       *prometheus.HistogramVec
	Bytes          *prometheus.CounterVec
	VerifyFailures *prometheus.CounterVec
	InFlight       prometheus.Gauge
}

// Deps are what a Pipeline is built from.
type Deps struct {
	Store *store.Store
	// Sources are tried in order for local clients (peers, then the origin); Origin alone serves
	// a coordinator's Pull for the cluster.
	Sources []Source
	Origin  Source
	// Sizes binds a blob's size before a source other than the origin is asked, and before a
	// partial file is resumed (nil: sizes are never bound; peers then supply only blobs they
	// send whole, verified by digest).
	Sizes Sizer
	// Announcer is told of content held (nil: a node without peers).
	Announcer Announcer
	// Collector is kicked after each commit (nil: none).
	Collector Collector
	// Download paces what is read from sources (the origin stream goes first).
	Download *throttle.Limiter
	// ChunkSize is the cluster's unit of verified transfer, the piece size of chunk maps; a blob
	// is announced from its first whole piece.
	ChunkSize int64
	// MaxPulls caps the origin fetches that Pull runs at once for other nodes (0: no cap); past
	// it Pull fails with ErrBusy.
	MaxPulls int
	Log      *slog.Logger
	Metrics  Metrics
}

// ErrBusy is Pull declining a new fetch because MaxPulls fetches for peers are under way: the
// asking node goes to another source (the origin itself) instead.
var ErrBusy = fmt.Errorf("origin fetches for peers at their cap: %w", errdefs.ErrTooManyRequests)

// Pipeline runs the fetches of one node.
type Pipeline struct {
	st        *store.Store
	sources   []Source
	origin    Source
	sizes     Sizer
	announcer Announcer
	collector Collector
	download  *throttle.Limiter
	chunkSize int64
	maxPulls  int
	log       *slog.Logger
	metrics   Metrics

	wg       sync.WaitGroup
	mu       sync.Mutex
	inflight map[digest.Digest]*fetch
	pulls    int // fetches in flight started by Pull
	closing  bool
}

// New returns a Pipeline. Close stops its fetches.
func New(deps Deps) *Pipeline {
	p := &Pipeline{st: deps.Store, sources: deps.Sources, origin: deps.Origin, sizes: deps.Sizes, announcer: deps.Announcer,
		collector: deps.Collector, download: deps.Download, chunkSize: deps.ChunkSize, maxPulls: deps.MaxPulls,
		log: deps.Log, metrics: deps.Metrics, inflight: map[digest.Digest]*fetch{}}
	if p.announcer == nil {
		p.announcer = noAnnouncer{}
	}
	if p.chunkSize <= 0 {
		p.chunkSize = chunks.DefaultSize
	}
	return p
}

type noAnnouncer struct{}

func (noAnnouncer) Announce(digest.Digest) {}
func (noAnnouncer) Withdraw(digest.Digest) {}

// copyBufSize is the unit of reading from a source and of serving a client from a fetch in
// flight. Memory per transfer is one buffer, whatever the blob's size.
const copyBufSize = 256 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// Blob is what OpenBlob returns: committed content or a fetch in flight. Its methods are
// registryapi.Blob's.
type Blob interface {
	io.Closer
	Size() int64
	Source() string
	CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error)
}

// OpenBlob serves blob d from the store, or joins or starts the one fetch of it. Errors wrap
// errdefs classes: ErrNotFound when no source has the blob.
func (p *Pipeline) OpenBlob(ctx context.Context, t Target, d digest.Digest) (Blob, error) {
	if b, err := p.st.OpenBlob(d, "cache"); err == nil {
		p.st.Touch(d)
		return b, nil
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	f, hit, err := p.join(t, d, p.sources, false)
	if err != nil {
		return nil, err
	}
	if hit != nil {
		return hit, nil
	}
	if err := f.wait(ctx); err != nil {
		f.release()
		return nil, err
	}
	return &readerBlob{f: f}, nil
}

// wait waits until the fetch knows its size and source, or failed before its first byte.
func (f *fetch) wait(ctx context.Context) error {
	select {
	case <-f.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.w == nil { // failed before the first byte
		_, _, _, err := f.state()
		return err
	}
	return nil
}

// Fetch brings blob d into the store through the pipeline and returns its size once it is
// committed, or the fetch's error. The bytes that arrive are written to progress as they are
// verified (nothing is written for a blob already held). Preheat uses it.
func (p *Pipeline) Fetch(ctx context.Context, t Target, d digest.Digest, progress io.Writer) (int64, error) {
	if info, err := p.st.Stat(d); err == nil {
		return info.Size, nil
	}
	f, hit, err := p.join(t, d, p.sources, false)
	if err != nil {
		return 0, err
	}
	if hit != nil { // committed meanwhile
		size := hit.Size()
		return size, hit.Close()
	}
	defer f.release()
	if err := f.wait(ctx); err != nil {
		return 0, err
	}
	rb := &readerBlob{f: f}
	if _, err := rb.CopyRange(ctx, progress, 0, -1); err != nil {
		return 0, err
	}
	select {
	case <-f.settled:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if _, err := p.st.Stat(d); err != nil {
		return 0, fmt.Errorf("%s: fetched but not committed: %w", d, errdefs.ErrUnavailable)
	}
	return f.size, nil
}

// Pull starts fetching d from the origin for the cluster, as its coordinator, and returns once
// the fetch is under way (or the content is held). The coordinator is asked because nobody the
// asking node trusts provides the blob, so it must not relay what some peer claims: the origin
// is its only source. Joining a fetch in flight is free; a new one fails with ErrBusy while
// MaxPulls others started here are under way.
func (p *Pipeline) Pull(ctx context.Context, t Target, d digest.Digest) error {
	if _, err := p.st.Stat(d); err == nil {
		return nil
	}
	f, hit, err := p.join(t, d, []Source{p.origin}, true)
	if err != nil {
		return err
	}
	if hit != nil {
		return hit.Close()
	}
	defer f.release()
	if err := f.wait(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", d, errdefs.ErrUnavailable)
		}
		return err
	}
	return nil
}

// InFlight reports whether a fetch of d is under way (joining it costs no origin request).
func (p *Pipeline) InFlight(d digest.Digest) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.inflight[d]
	return ok
}

// FromOrigin reports whether a fetch of d is under way whose bytes come from the origin: this
// node then holds chunks of d that no peer has yet (it coordinates d, or fell back to the origin).
func (p *Pipeline) FromOrigin(d digest.Digest) bool {
	p.mu.Lock()
	f, ok := p.inflight[d]
	p.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-f.ready:
		return f.w != nil && p.origin != nil && f.source == p.origin.Name()
	default:
		return false
	}
}

// OpenInFlight returns the fetch of d in flight, for a peer, if its size is known.
func (p *Pipeline) OpenInFlight(d digest.Digest) (*InFlight, bool) {
	p.mu.Lock()
	f, ok := p.inflight[d]
	if ok {
		f.acquire()
	}
	p.mu.Unlock()
	if !ok {
		return nil, false
	}
	select {
	case <-f.ready:
		if f.w != nil && f.size >= 0 {
			return &InFlight{f: f}, true
		}
	default:
	}
	f.release()
	return nil, false
}

// InFlightSize is the size of blob d if it is being fetched and its size is known.
func (p *Pipeline) InFlightSize(d digest.Digest) (int64, bool) {
	c, ok := p.OpenInFlight(d)
	if !ok {
		return 0, false
	}
	defer c.Close()
	return c.Size(), true
}

// Transfer is a blob fetch in flight, as the status page shows it.
type Transfer struct {
	Digest digest.Digest `json:"digest"`
	Source string        `json:"source"`
	Bytes  int64         `json:"bytes"`
	Size   int64         `json:"size"`
}

// Transfers lists the fetches in flight, by digest.
func (p *Pipeline) Transfers() []Transfer {
	out := []Transfer{}
	p.mu.Lock()
	for d, f := range p.inflight {
		select {
		case <-f.ready:
		default:
			out = append(out, Transfer{Digest: d, Size: -1})
			continue
		}
		visible, _, _, _ := f.state()
		out = append(out, Transfer{Digest: d, Source: f.source, Bytes: visible, Size: f.size})
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out
}

// Close stops the fetches in flight (their partial files are kept for the next run) and waits
// for them. No fetch starts afterwards.
func (p *Pipeline) Close() {
	p.mu.Lock()
	p.closing = true
	for _, f := range p.inflight {
		f.cancel()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// join returns the fetch in flight for d with a reference taken, starting one if there is none.
// If the content was committed meanwhile it returns the committed blob instead. A new fetch for
// a peer (forPeer) counts toward MaxPulls.
func (p *Pipeline) join(t Target, d digest.Digest, sources []Source, forPeer bool) (*fetch, Blob, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.inflight[d]; ok {
		f.acquire()
		return f, nil, nil
	}
	// The fetching goroutine removes its entry only after commit, so under p.mu the store and
	// the map together never miss content.
	if b, err := p.st.OpenBlob(d, "cache"); err == nil {
		return nil, b, nil
	}
	if p.closing {
		return nil, nil, fmt.Errorf("node is shutting down: %w", errdefs.ErrUnavailable)
	}
	if forPeer && p.maxPulls > 0 && p.pulls >= p.maxPulls {
		return nil, nil, fmt.Errorf("%s: %w", d, ErrBusy)
	}
	// A fetch outlives the request that started it (runtimes retry; the bytes are wanted): it
	// ends with its sources' own bounds, or when the pipeline closes.
	ctx, cancel := context.WithCancel(context.Background())
	f := newFetch(p, d, cancel)
	f.acquire() // the caller's reference; the goroutine owns the first
	f.forPeer = forPeer
	if forPeer {
		p.pulls++
	}
	p.inflight[d] = f
	p.metrics.InFlight.Inc()
	p.wg.Add(1)
	go p.run(ctx, f, t, sources)
	return f, nil, nil
}

// run moves a blob from the first source that has it into the store.
func (p *Pipeline) run(ctx context.Context, f *fetch, t Target, sources []Source) {
	defer p.wg.Done()
	defer f.cancel()
	start := time.Now()
	log := p.log.With("digest", f.d, "repo", t.Repo)
	err := p.fromSources(ctx, f, t, sources, log)
	if err != nil && f.w != nil {
		f.update(func() { f.done, f.err = true, err })
	}
	if err == nil && f.w == nil {
		err = fmt.Errorf("%s: %w", f.d, errdefs.ErrNotFound)
	}
	p.mu.Lock()
	delete(p.inflight, f.d)
	if f.forPeer {
		p.pulls--
	}
	p.mu.Unlock()
	p.metrics.InFlight.Dec()
	if err != nil && !errors.Is(err, errdefs.ErrDigestMismatch) && !errors.Is(err, errdefs.ErrNoSpace) &&
		(ctx.Err() != nil || errors.Is(err, errdefs.ErrUnavailable)) {
		// Cut short by shutdown, or by sources unavailable for now: the bytes held so far are
		// kept for the next fetch of the digest (after a restart too). A full disk drops them:
		// kept, they would keep it full.
		f.mu.Lock()
		f.suspend = true
		f.mu.Unlock()
	}
	if err != nil && f.announced {
		p.announcer.Withdraw(f.d)
	}
	if err != nil {
		if f.w == nil {
			f.mu.Lock()
			f.err = err
			f.mu.Unlock()
			close(f.ready)
		}
		log.Warn("blob fetch failed", "source", f.source, "err", err, "duration", time.Since(start))
	} else {
		p.metrics.Duration.WithLabelValues(f.source).Observe(time.Since(start).Seconds())
		log.Info("blob fetched", "source", f.source, "bytes", f.size, "duration", time.Since(start))
	}
	close(f.settled)
	f.release()
}

// maxResumes bounds how often a fetch asks its last source again for the rest of a blob after a
// stream that broke off having made progress.
const maxResumes = 3

func (p *Pipeline) fromSources(ctx context.Context, f *fetch, t Target, sources []Source, log *slog.Logger) error {
	var lastErr error = fmt.Errorf("%s: no source: %w", f.d, errdefs.ErrNotFound)
	var w *store.Writer
	var states StateSource // the filler whose peers' chain states the store resumed from, if any
	// bind returns the blob's bound size (-1: none known), asking the Sizer once.
	bound, asked := int64(-1), false
	bind := func() int64 {
		if !asked && p.sizes != nil {
			asked = true
			if size, err := p.sizes.BlobSize(ctx, t, f.d); err == nil && size >= 0 {
				bound = size
			} else {
				log.Debug("blob size not bound", "err", err)
			}
		}
		return bound
	}
	if size, ok := p.st.Partial(f.d); ok {
		// A previous run left part of this blob. It is resumed only at the size the node trusts
		// (a partial's size came from the source of that run), and dropped when that disagrees;
		// when nobody trusted can say now, it waits for a source that fixes the size (the
		// origin), and ResumeWriter takes it at that size.
		switch b := bind(); {
		case b == size:
			var err error
			if w, err = p.st.ResumeWriter(f.d, size); err != nil {
				return err
			}
			f.size, f.source, f.w = size, "partial", w
			visible := min(w.Written(), size-1)
			f.update(func() { f.visible = visible })
			close(f.ready)
			p.kickCollector()
			if w.Written() == size {
				return p.finish(f, "partial", nil) // every chunk was there (a crash before commit)
			}
		case b >= 0:
			log.Warn("dropping a partial blob whose size disagrees with the bound one", "size", size, "bound", b)
			p.st.DropPartial(f.d)
		}
	}
	resumes := 0
	for i := 0; i < len(sources); i++ {
		src := sources[i]
		off, size := int64(0), bound
		switch {
		case w != nil:
			off, size = w.Written(), f.size
		case src != p.origin:
			// Anyone but the origin: the size is bound before a byte is taken.
			size = bind()
		}
		body, got, err := src.FetchBlob(ctx, t, f.d, off, size)
		if err != nil {
			log.Debug("source cannot supply blob", "source", src.Name(), "offset", off, "err", err)
			lastErr = err
			continue
		}
		if w == nil && size >= 0 && got != size {
			closeBody(body, log)
			lastErr = fmt.Errorf("%s: %s says %d bytes, the bound size is %d: %w", f.d, src.Name(), got, size, errdefs.ErrDigestMismatch)
			log.Warn("source disagrees with the blob's bound size", "source", src.Name(), "size", got, "bound", size)
			continue
		}
		if w == nil {
			if w, err = p.st.ResumeWriter(f.d, got); err != nil {
				closeBody(body, log)
				return err
			}
			f.size, f.source, f.w = got, src.Name(), w
			close(f.ready)
			p.kickCollector() // the fetch's reservation may take the store past its limit
		} else if got >= 0 && f.size >= 0 && got != f.size {
			closeBody(body, log)
			lastErr = fmt.Errorf("%s: %s says %d bytes, the first source said %d: %w", f.d, src.Name(), got, f.size, errdefs.ErrDigestMismatch)
			continue
		} else {
			log.Info("resuming blob from the next source", "source", src.Name(), "offset", off)
		}
		// An origin source lands the blob in order: it is receiving the chunks past its prefix.
		inOrder := src == p.origin
		f.update(func() { f.inOrder = inOrder })
		switch b := body.(type) {
		case Filler:
			err = b.Fill(ctx, sink{f})
			if ss, ok := b.(StateSource); ok && w.Written() > 0 {
				states = ss
			}
		case io.Reader:
			err = p.stream(ctx, f, src.Name(), b)
		default:
			err = fmt.Errorf("%s: source %s returned a %T: %w", f.d, src.Name(), body, errdefs.ErrInvalid)
		}
		f.update(func() { f.inOrder = false })
		closeBody(body, log)
		if err == nil {
			return p.finish(f, src.Name(), states)
		}
		if errors.Is(err, errdefs.ErrDigestMismatch) || errors.Is(err, errdefs.ErrNoSpace) || ctx.Err() != nil {
			if errors.Is(err, errdefs.ErrDigestMismatch) {
				p.verificationFailed(f, src.Name(), err)
			}
			return err
		}
		log.Warn("source failed mid-blob", "source", src.Name(), "offset", w.Written(), "err", err)
		lastErr = err
		if i == len(sources)-1 && w.Written() > off && resumes < maxResumes {
			// The last source (the origin) broke off after sending bytes, as a connection cut
			// mid-body does: ask it again for the rest rather than fail every client.
			resumes++
			i--
		}
	}
	return lastErr
}

// kickCollector asks for a garbage collection pass: content being written counts toward the
// store's limit, so a fetch that starts may need room made.
func (p *Pipeline) kickCollector() {
	if p.collector != nil {
		p.collector.Kick()
	}
}

func closeBody(c io.Closer, log *slog.Logger) {
	if err := c.Close(); err != nil {
		log.Debug("closing a source body", "err", err)
	}
}

// stream copies a source's stream into the fetch's file from the current offset, publishing as
// it lands. It returns nil at the stream's end.
func (p *Pipeline) stream(ctx context.Context, f *fetch, source string, body io.Reader) error {
	w := f.w
	// A whole stream from one source, the origin in practice: the cluster's copy when this node
	// coordinates, and whose bytes every peer waits for. It goes ahead of the node's own swarm
	// downloads on the link.
	body = p.download.PriorityReader(ctx, body)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		// Publish each read as it lands: a client's first byte must not wait for a full buffer.
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			f.publish()
			p.metrics.Bytes.WithLabelValues(source).Add(float64(n))
		}
		if rerr == io.EOF {
			if f.size >= 0 && w.Written() < f.size {
				return fmt.Errorf("%s: %s ended at %d of %d bytes: %w", f.d, source, w.Written(), f.size, errdefs.ErrUnavailable)
			}
			return nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", f.d, ctx.Err())
			}
			return fmt.Errorf("%s: reading from %s: %w", f.d, source, rerr)
		}
	}
}

// finish verifies the whole blob, releases its last byte to readers, then commits and
// announces it.
func (p *Pipeline) finish(f *fetch, source string, states StateSource) error {
	w := f.w
	if err := w.Verify(); err != nil {
		if states != nil && source != "peer" {
			// The bytes after the resume were hashed on from peers' chain states, so one of
			// them was forged. Which peer forged it cannot be told here (an honest peer relays
			// the states it was given), so none is blamed; this digest is just not taken from
			// them again for a while, and the next fetch goes around them.
			if who := states.StatesForged(); len(who) > 0 {
				p.metrics.VerifyFailures.WithLabelValues("peer").Inc()
				p.log.Error("blob failed its digest after resuming from peers' chunk map; not taking it from them for a while",
					"digest", f.d, "peers", who, "err", err)
				return err
			}
		}
		p.verificationFailed(f, source, err)
		return err
	}
	f.update(func() { f.visible, f.done = w.Written(), true })
	if err := w.Commit(""); err != nil {
		// The clients got verified bytes; only the copy on disk is lost.
		p.log.Error("committing blob failed", "digest", f.d, "err", err)
		return nil
	}
	p.announcer.Announce(f.d)
	if p.collector != nil {
		p.collector.Kick()
	}
	return nil
}

func (p *Pipeline) verificationFailed(f *fetch, source string, err error) {
	p.metrics.VerifyFailures.WithLabelValues(source).Inc()
	p.log.Error("content failed verification; discarded", "digest", f.d, "source", source, "err", err)
}
