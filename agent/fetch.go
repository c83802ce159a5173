package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/registryapi"
)

// Source is one place the fetch pipeline can get a whole blob from, tried in order after the
// local store: peers, then the origin. A Source returns the blob's size (-1 if unknown) and
// either an io.ReadCloser, the unverified stream that the pipeline verifies byte by byte, or a
// chunkFiller, which lands the bytes in the fetch's file itself.
// ErrNotFound or ErrUnavailable before any byte arrives sends the pipeline to the next source.
type Source interface {
	Name() string
	// FetchBlob opens the blob from byte off on (a resume after another source failed); size is
	// the blob's size if already known, else -1. It returns the body and the whole blob's size.
	FetchBlob(ctx context.Context, t registryapi.Target, d digest.Digest, off, size int64) (io.Closer, int64, error)
}

// chunkFiller is a source body that lands the blob out of order in the fetch's writer itself:
// the swarm's chunks, each verified against a chunk map (WriteAt, MarkChunk), or parallel origin
// ranges hashed in order as the prefix completes (WriteAt, Absorb).
type chunkFiller interface {
	io.Closer
	Fill(ctx context.Context, f *fetch) error
	// MapProviders are the peers whose maps gave the states up to the prefix held when Fill
	// returned: if another source resumes from there and the blob then fails its digest, one of
	// those states was forged.
	// if another source resumes from there and the blob then fails its digest, the state was
	// forged and this peer is to blame.
	MapProviders() []peer.ID
}

// copyBufSize is the unit of reading from a source and of serving a client from a fetch in
// flight. Memory per transfer is one buffer, whatever the blob's size.
const copyBufSize = 256 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// fetch is one blob being fetched, shared by every local client that asks for it meanwhile.
// Bytes go to a temporary file in the store; clients read them back from that file as they
// arrive. The last byte is held back until the whole blob has verified against its digest, so a
// client never receives a complete response with wrong content: on a mismatch its response is
// aborted short.
type fetch struct {
	d     digest.Digest
	ready chan struct{} // closed once size and source are known, or the fetch failed first
	// settled is closed when the fetch is over: committed to the store, or failed.
	settled chan struct{}

	// Set before ready is closed, then read-only.
	size   int64
	source string
	w      *store.Writer

	mu      sync.Mutex
	visible int64 // bytes clients may read
	done    bool  // no more bytes will come; with err == nil the blob is whole and verified
	err     error
	wake    chan struct{} // closed and replaced whenever visible or done changes
	refs    int           // open client handles plus the fetching goroutine

	announced bool // advertised to peers before commit (only the fetching goroutine touches it)
	// suspend keeps the partial file for the next run: the fetch was cut short by shutdown.
	suspend bool
}

func newFetch(d digest.Digest) *fetch {
	return &fetch{d: d, ready: make(chan struct{}), settled: make(chan struct{}), wake: make(chan struct{}), refs: 1}
}

func (f *fetch) acquire() {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
}

// release drops a reference; the last one closes the temporary file (which by then is either
// committed under its final name or removed).
func (f *fetch) release() {
	f.mu.Lock()
	f.refs--
	last, suspend := f.refs == 0, f.suspend
	f.mu.Unlock()
	if last && f.w != nil {
		if suspend {
			_ = f.w.Suspend()
		} else {
			_ = f.w.Close()
		}
	}
}

// state returns what clients may read (visible bytes; done once no more will come, with err
// set if the fetch failed) and a channel closed at the next change.
func (f *fetch) state() (visible int64, done bool, wake <-chan struct{}, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.visible, f.done, f.wake, f.err
}

func (f *fetch) update(fn func()) {
	f.mu.Lock()
	fn()
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// fetchBlob is a client's handle on a fetch in flight.
type fetchBlob struct {
	f    *fetch
	once sync.Once
}

var _ registryapi.Blob = (*fetchBlob)(nil)

func (b *fetchBlob) Size() int64    { return b.f.size }
func (b *fetchBlob) Source() string { return b.f.source }
func (b *fetchBlob) Close() error   { b.once.Do(b.f.release); return nil }

// CopyRange streams bytes of the fetch to w as they become visible.
func (b *fetchBlob) CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var written int64
	for n != 0 {
		visible, done, wake, err := b.f.state()
		if off < visible {
			chunk := min(visible-off, int64(len(buf)))
			if n > 0 {
				chunk = min(chunk, n)
			}
			m, rerr := b.f.w.File().ReadAt(buf[:chunk], off)
			if m > 0 {
				wn, werr := w.Write(buf[:m])
				written += int64(wn)
				off += int64(wn)
				if n > 0 {
					n -= int64(wn)
				}
				if werr != nil {
					return written, werr
				}
			}
			if rerr != nil && !errors.Is(rerr, io.EOF) {
				return written, fmt.Errorf("reading fetch of %s: %w", b.f.d, rerr)
			}
			continue
		}
		if done {
			if err != nil {
				return written, err
			}
			if n < 0 {
				return written, nil
			}
			return written, fmt.Errorf("%s: range beyond the blob: %w", b.f.d, io.ErrUnexpectedEOF)
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return written, ctx.Err()
		}
	}
	return written, nil
}

// fileBlob is committed content served from the store.
type fileBlob struct {
	f    *os.File
	size int64
}

var _ registryapi.Blob = (*fileBlob)(nil)

func (b *fileBlob) Size() int64    { return b.size }
func (b *fileBlob) Source() string { return "cache" }
func (b *fileBlob) Close() error   { return b.f.Close() }

// CopyRange hands the file section to w as an *io.LimitedReader over the *os.File, the shape
// net/http's response passes to the TCP connection's sendfile.
func (b *fileBlob) CopyRange(_ context.Context, w io.Writer, off, n int64) (int64, error) {
	if n < 0 {
		n = b.size - off
	}
	if _, err := b.f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	written, err := io.Copy(w, &io.LimitedReader{R: b.f, N: n})
	if err == nil && written != n {
		err = io.ErrUnexpectedEOF
	}
	return written, err
}

// OpenBlob serves a blob from the store, or joins or starts the one fetch of it.
func (a *Agent) OpenBlob(ctx context.Context, t registryapi.Target, d digest.Digest) (registryapi.Blob, error) {
	if f, info, err := a.store.Open(d); err == nil {
		a.store.Touch(d)
		return &fileBlob{f: f, size: info.Size}, nil
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	f, hit, err := a.joinFetch(t, d, a.sources)
	if err != nil {
		return nil, err
	}
	if hit != nil {
		return hit, nil
	}
	select {
	case <-f.ready:
	case <-ctx.Done():
		f.release()
		return nil, ctx.Err()
	}
	if f.w == nil { // failed before the first byte
		_, _, _, err := f.state()
		f.release()
		return nil, err
	}
	return &fetchBlob{f: f}, nil
}

// joinFetch returns the fetch in flight for d with a reference taken, starting one if there is
// none. If the content was committed meanwhile it returns the committed blob instead.
func (a *Agent) joinFetch(t registryapi.Target, d digest.Digest, sources []Source) (*fetch, registryapi.Blob, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if f, ok := a.inflight[d]; ok {
		f.acquire()
		return f, nil, nil
	}
	// The fetching goroutine removes its entry only after commit, so under a.mu the store and
	// the map together never miss content.
	if file, info, err := a.store.Open(d); err == nil {
		return nil, &fileBlob{f: file, size: info.Size}, nil
	}
	if a.closing {
		return nil, nil, fmt.Errorf("agent is shutting down: %w", errdefs.ErrUnavailable)
	}
	f := newFetch(d)
	f.acquire() // the caller's reference; the goroutine owns the first
	a.inflight[d] = f
	a.metrics.inflight.Inc()
	a.wg.Add(1)
	go a.runFetch(f, t, sources)
	return f, nil, nil
}

// runFetch moves a blob from the first source that has it into the store.
func (a *Agent) runFetch(f *fetch, t registryapi.Target, sources []Source) {
	defer a.wg.Done()
	start := time.Now()
	log := a.log.With("digest", f.d, "repo", t.Repo)
	err := a.fetchFromSources(f, t, sources, log)
	if err != nil && f.w != nil {
		f.update(func() { f.done, f.err = true, err })
	}
	if err == nil && f.w == nil {
		err = fmt.Errorf("%s: %w", f.d, errdefs.ErrNotFound)
	}
	a.mu.Lock()
	delete(a.inflight, f.d)
	a.mu.Unlock()
	a.metrics.inflight.Dec()
	if err != nil && !errors.Is(err, errdefs.ErrDigestMismatch) && (a.lifetime.Err() != nil || errors.Is(err, errdefs.ErrUnavailable)) {
		// Cut short by shutdown, or by sources unavailable for now: the bytes held so far are
		// kept for the next fetch of the digest (after a restart too).
		f.mu.Lock()
		f.suspend = true
		f.mu.Unlock()
	}
	if err != nil && f.announced && a.router != nil {
		a.router.StopProviding(f.d)
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
		a.metrics.fetchDuration.WithLabelValues(f.source).Observe(time.Since(start).Seconds())
		log.Info("blob fetched", "source", f.source, "bytes", f.size, "duration", time.Since(start))
	}
	close(f.settled)
	f.release()
}

// Fetch brings blob d into the store through the pipeline (store, peers, coordinator, origin)
// and returns its size once it is committed, or the fetch's error. The bytes that arrive are
// written to progress as they land (nothing is written for a blob already held). Preheat uses it.
func (a *Agent) Fetch(ctx context.Context, t registryapi.Target, d digest.Digest, progress io.Writer) (int64, error) {
	if info, err := a.store.Stat(d); err == nil {
		return info.Size, nil
	}
	f, hit, err := a.joinFetch(t, d, a.sources)
	if err != nil {
		return 0, err
	}
	if hit != nil { // committed meanwhile
		size := hit.Size()
		return size, hit.Close()
	}
	defer f.release()
	select {
	case <-f.ready:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if f.w == nil { // failed before the first byte
		_, _, _, err := f.state()
		return 0, err
	}
	if _, err := (&fetchBlob{f: f}).CopyRange(ctx, progress, 0, -1); err != nil {
		return 0, err
	}
	select {
	case <-f.settled:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if _, err := a.store.Stat(d); err != nil {
		return 0, fmt.Errorf("%s: fetched but not committed: %w", d, errdefs.ErrUnavailable)
	}
	return f.size, nil
}

func (a *Agent) fetchFromSources(f *fetch, t registryapi.Target, sources []Source, log *slog.Logger) error {
	ctx := a.lifetime
	var lastErr error = fmt.Errorf("%s: no source: %w", f.d, errdefs.ErrNotFound)
	var w *store.Writer
	var mapFrom []peer.ID // the peers whose chunk map states the store resumed from, if any
	if size, ok := a.store.Partial(f.d); ok {
		// A previous run left part of this blob: keep the chunks that still verify, and ask the
		// sources only for the rest.
		var err error
		if w, err = a.store.ResumeWriter(f.d, size); err != nil {
			return err
		}
		f.size, f.source, f.w = size, "partial", w
		visible := min(w.Written(), size-1)
		f.update(func() { f.visible = visible })
		close(f.ready)
		if w.Written() == size {
			return a.finish(f, "partial", nil) // every chunk was there (a crash before commit)
		}
	}
	resumes := 0
	for i := 0; i < len(sources); i++ {
		src := sources[i]
		off, size := int64(0), int64(-1)
		if w != nil {
			off, size = w.Written(), f.size
		}
		body, got, err := src.FetchBlob(ctx, t, f.d, off, size)
		if err != nil {
			log.Debug("source cannot supply blob", "source", src.Name(), "offset", off, "err", err)
			lastErr = err
			continue
		}
		if w == nil {
			if w, err = a.store.ResumeWriter(f.d, got); err != nil {
				body.Close()
				return err
			}
			f.size, f.source, f.w = got, src.Name(), w
			close(f.ready)
		} else if got >= 0 && f.size >= 0 && got != f.size {
			body.Close()
			lastErr = fmt.Errorf("%s: %s says %d bytes, the first source said %d: %w", f.d, src.Name(), got, f.size, errdefs.ErrDigestMismatch)
			continue
		} else {
			log.Info("resuming blob from the next source", "source", src.Name(), "offset", off)
		}
		switch b := body.(type) {
		case chunkFiller:
			err = b.Fill(ctx, f)
			if w.Written() > 0 {
				mapFrom = b.MapProviders()
			}
		case io.Reader:
			err = a.fill(ctx, f, src.Name(), b)
		default:
			err = fmt.Errorf("%s: source %s returned a %T: %w", f.d, src.Name(), body, errdefs.ErrInvalid)
		}
		body.Close()
		if err == nil {
			return a.finish(f, src.Name(), mapFrom)
		}
		if errors.Is(err, errdefs.ErrDigestMismatch) || ctx.Err() != nil {
			if errors.Is(err, errdefs.ErrDigestMismatch) {
				a.verificationFailed(f, src.Name(), err)
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

// maxResumes bounds how often a fetch asks its last source again for the rest of a blob after a
// stream that broke off having made progress.
const maxResumes = 3

// fill copies a source's stream into the fetch's file from the current offset, making bytes
// visible to clients as they land. It returns nil at the stream's end.
func (a *Agent) fill(ctx context.Context, f *fetch, source string, body io.Reader) error {
	w := f.w
	// A whole stream from one source, the origin in practice: the cluster's copy when this node
	// coordinates, and whose bytes every peer waits for. It goes ahead of the node's own swarm
	// downloads on the link.
	body = a.download.PriorityReader(ctx, body)
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
			// Hold back the blob's last byte (or, with no known size, the last byte so far)
			// until the digest verifies.
			visible := w.Written() - 1
			if f.size >= 0 {
				visible = min(w.Written(), f.size-1)
			}
			f.update(func() { f.visible = visible })
			// Advertise the blob as soon as a whole chunk has landed: peers fetching it at the
			// same moment find this node and stream from it.
			if !f.announced && f.size >= 0 && visible >= a.cfg.ChunkSize {
				f.announced = true
				a.announce(f.d)
			}
			a.metrics.fetchedBytes.WithLabelValues(source).Add(float64(n))
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

// finish verifies the whole blob, releases its last byte to clients, then commits and announces it.
func (a *Agent) finish(f *fetch, source string, mapFrom []peer.ID) error {
	w := f.w
	if err := w.Verify(); err != nil {
		if len(mapFrom) > 0 && source != "peer" {
			// The bytes after the resume were hashed on from peers' chain states, so one of
			// them was forged. Which peer forged it cannot be told here (an honest peer relays
			// the states it was given), so none is blamed; this digest is just not taken from
			// them again for a while, and the next fetch goes around them.
			a.penalties.excludeFor(f.d, mapFrom)
			a.metrics.verifyFailures.WithLabelValues("peer").Inc()
			a.log.Error("blob failed its digest after resuming from peers' chunk map; not taking it from them for a while",
				"digest", f.d, "peers", mapFrom, "err", err, "for", penaltyDuration)
			return err
		}
		a.verificationFailed(f, source, err)
		return err
	}
	f.update(func() { f.visible, f.done = w.Written(), true })
	if err := w.Commit(""); err != nil {
		// The clients got verified bytes; only the copy on disk is lost.
		a.log.Error("committing blob failed", "digest", f.d, "err", err)
		return nil
	}
	a.announce(f.d)
	a.kickGC()
	return nil
}

func (a *Agent) verificationFailed(f *fetch, source string, err error) {
	a.metrics.verifyFailures.WithLabelValues(source).Inc()
	a.log.Error("content failed verification; discarded", "digest", f.d, "source", source, "err", err)
}

// StatBlob answers HEAD: from the store, a fetch in flight, or the origin.
func (a *Agent) StatBlob(ctx context.Context, t registryapi.Target, d digest.Digest) (int64, error) {
	if info, err := a.store.Stat(d); err == nil {
		return info.Size, nil
	}
	a.mu.Lock()
	f, ok := a.inflight[d]
	a.mu.Unlock()
	if ok {
		select {
		case <-f.ready:
			if f.w != nil && f.size >= 0 {
				return f.size, nil
			}
		default:
		}
	}
	if t.Registry == nil {
		return a.peerBlobSize(ctx, d)
	}
	size, err := a.origin.HeadBlob(ctx, t.Registry, t.Repo, d)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrDenied) {
		// The origin cannot answer: a peer holding the blob can.
		if psize, perr := a.peerBlobSize(ctx, d); perr == nil {
			return psize, nil
		}
	}
	return size, err
}
