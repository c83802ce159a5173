package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

// fetch is one blob being fetched, shared by every local client (and peer) that asks for it
// meanwhile. Bytes go to a partial file in the store; readers read them back from that file as
// they are verified. The last byte is held back until the whole blob has verified against its
// digest, so a client never receives a complete response with wrong content: on a mismatch its
// response is aborted short.
type fetch struct {
	d       digest.Digest
	p       *Pipeline
	cancel  context.CancelFunc // stops the fetch (Pipeline.Close)
	ready   chan struct{}      // closed once size and source are known, or the fetch failed first
	settled chan struct{}      // closed when the fetch is over: committed, or failed

	forPeer bool // started by Pull; set under Pipeline.mu before the fetch runs

	// Set before ready is closed, then read-only.
	size   int64
	source string
	w      *store.Writer

	mu      sync.Mutex
	visible int64 // bytes clients may read
	done    bool  // no more bytes will come; with err == nil the blob is whole and verified
	err     error
	wake    chan struct{} // closed and replaced whenever visible or done changes
	refs    int           // open reader handles plus the fetching goroutine

	// inOrder marks an origin source landing the blob in order (under mu): it is receiving the
	// chunks just past its prefix, which peers may ask for and get as each one lands.
	inOrder bool

	announced bool // advertised to peers before commit (only the fetching goroutine touches it)
	// suspend keeps the partial file for the next run: the fetch was cut short by shutdown, or
	// its sources are unavailable for now.
	suspend bool
}

func newFetch(p *Pipeline, d digest.Digest, cancel context.CancelFunc) *fetch {
	return &fetch{d: d, p: p, cancel: cancel, ready: make(chan struct{}), settled: make(chan struct{}),
		wake: make(chan struct{}), refs: 1}
}

func (f *fetch) acquire() {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
}

// release drops a reference; the last one closes the partial file (which by then is either
// committed under its final name, kept for the next run, or removed).
func (f *fetch) release() {
	f.mu.Lock()
	f.refs--
	last, suspend := f.refs == 0, f.suspend
	f.mu.Unlock()
	if !last || f.w == nil {
		return
	}
	var err error
	if suspend {
		err = f.w.Suspend()
	} else {
		err = f.w.Close()
	}
	if err != nil {
		f.p.log.Warn("closing a fetch's partial file", "digest", f.d, "keep", suspend, "err", err)
	}
}

// state returns what readers may read (visible bytes; done once no more will come, with err
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

// sink is the Sink of a fetch: its store writer plus publishing.
type sink struct{ f *fetch }

var _ Sink = sink{}

func (s sink) Size() int64                              { return s.f.size }
func (s sink) Written() int64                           { return s.f.w.Written() }
func (s sink) Held() *chunks.Set                        { return s.f.w.Held() }
func (s sink) WriteAt(p []byte, off int64) (int, error) { return s.f.w.WriteAt(p, off) }
func (s sink) Absorb(upTo int64) error                  { return s.f.w.Absorb(upTo) }
func (s sink) MarkChunk(i int, m *chunks.Map) error     { return s.f.w.MarkChunk(i, m) }
func (s sink) Publish()                                 { s.f.publish() }

// publish is the one place a fetch's progress becomes visible: the verified prefix to local
// clients (holding back the last byte of a blob of known size, or the last byte so far of one
// of unknown size, until the digest verifies), and the blob to the cluster as soon as a whole
// chunk of it is held, so that peers fetching it at the same moment find this node.
func (f *fetch) publish() {
	written := f.w.Written()
	visible := written - 1
	if f.size >= 0 {
		visible = min(written, f.size-1)
	}
	f.update(func() { f.visible = visible })
	if f.announced || f.size < 0 {
		return
	}
	if visible >= f.p.chunkSize || f.w.Held().Count() > 0 {
		f.announced = true
		f.p.announcer.Announce(f.d)
	}
}

// readerBlob is a local client's handle on a fetch in flight (a registryapi.Blob).
type readerBlob struct {
	f    *fetch
	once sync.Once
}

func (b *readerBlob) Size() int64    { return b.f.size }
func (b *readerBlob) Source() string { return b.f.source }
func (b *readerBlob) Close() error   { b.once.Do(b.f.release); return nil }

// CopyRange streams bytes [off, off+n) of the fetch to w as they become visible; n < 0 means to
// the end. An error after bytes were written means the client's response must be aborted.
//
// The visible bytes are copied from a descriptor of the partial file of the client's own, as
// an io.LimitedReader of an *os.File, which an HTTP response hands to sendfile(2): the bytes go
// from the page cache to the socket without a read into a buffer and a write out of it. Where
// the file cannot be opened again, they are read into a buffer and written.
func (b *readerBlob) CopyRange(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	rf := reopen(b.f.w.File())
	if rf != nil {
		defer rf.Close()
	}
	var buf []byte
	if rf == nil {
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		buf = *bp
	}
	var written int64
	for n != 0 {
		visible, done, wake, err := b.f.state()
		if off < visible {
			chunk := visible - off
			if n > 0 {
				chunk = min(chunk, n)
			}
			var wn int64
			var rerr, werr error
			if rf != nil {
				wn, werr = copyFileRange(w, rf, off, chunk)
			} else {
				var m int
				m, rerr = b.f.w.File().ReadAt(buf[:min(chunk, int64(len(buf)))], off)
				if m > 0 {
					k, err := w.Write(buf[:m])
					wn, werr = int64(k), err
				}
			}
			written += wn
			off += wn
			if n > 0 {
				n -= wn
			}
			if werr != nil {
				return written, werr
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

// reopen opens the file f names again, read-only, for a reader with its own offset; nil if the
// name no longer leads to f (renamed at commit).
func reopen(f *os.File) *os.File {
	rf, err := os.Open(f.Name())
	if err != nil {
		return nil
	}
	a, err1 := rf.Stat()
	b, err2 := f.Stat()
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		_ = rf.Close()
		return nil
	}
	return rf
}

// copyFileRange copies bytes [off, off+n) of rf to w with io.Copy, which lets w take them from
// the file itself (an HTTP response: sendfile). An error is either side's: the response ends.
func copyFileRange(w io.Writer, rf *os.File, off, n int64) (int64, error) {
	if _, err := rf.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	written, err := io.Copy(w, &io.LimitedReader{R: rf, N: n})
	if err == nil && written == 0 {
		err = io.ErrUnexpectedEOF // visible bytes the file does not have
	}
	return written, err
}

// InFlight is a blob this node is still fetching, opened for a peer: reads return verified
// bytes (chunks held, or the prefix released to local clients) and wait a bounded time for
// bytes that have not landed. Its methods are transfer.Blob's.
type InFlight struct {
	f    *fetch
	once sync.Once
}

// Size is the blob's size.
func (c *InFlight) Size() int64 { return c.f.size }

// MediaType is empty: manifests are never fetched through the pipeline.
func (c *InFlight) MediaType() string { return "" }

// Close releases the fetch.
func (c *InFlight) Close() error { c.once.Do(c.f.release); return nil }

// inFlightWait bounds how long a peer's read waits for bytes that have not landed, and
// notReceivingWait how long of it for bytes this node is not receiving at the moment (a chunk
// request of its own failed, and another is about to start): past it the peer is told at once,
// so that it takes the bytes elsewhere instead of waiting out a request that may not come.
const (
	inFlightWait     = 30 * time.Second
	notReceivingWait = 2 * time.Second
)

// ReadAt reads verified bytes, waiting for them up to inFlightWait: bytes of a chunk this node
// is receiving go out as soon as that chunk verifies (cut-through).
func (c *InFlight) ReadAt(p []byte, off int64) (int, error) {
	timer := time.NewTimer(inFlightWait)
	defer timer.Stop()
	var idle time.Time // since when the bytes are neither held nor being received
	for {
		visible, done, wake, err := c.f.state()
		end := off + int64(len(p))
		if c.f.w.Holds(off, int64(len(p))) {
			visible = end
		}
		if end > visible && !done && !c.Offers(max(off, visible)) {
			if idle.IsZero() {
				idle = time.Now()
			} else if time.Since(idle) > notReceivingWait {
				return 0, fmt.Errorf("%s: bytes at %d are not being received here: %w", c.f.d, off, errdefs.ErrUnavailable)
			}
		} else {
			idle = time.Time{}
		}
		if end <= visible || (done && err == nil) {
			n, rerr := c.f.w.File().ReadAt(p[:max(0, min(int64(len(p)), visible-off))], off)
			if rerr == nil && n < len(p) {
				rerr = io.EOF
			}
			return n, rerr
		}
		if done {
			return 0, err
		}
		select {
		case <-wake:
		case <-timer.C:
			return 0, fmt.Errorf("%s: no bytes at %d for %s: %w", c.f.d, off, inFlightWait, errdefs.ErrUnavailable)
		case <-time.After(notReceivingWait / 4):
			// Recheck what is being received: its changes do not always wake readers.
		}
	}
}

// PartialMap is the chunk map of what the fetch holds, nil before its first chunk.
func (c *InFlight) PartialMap() *chunks.Map { return c.f.w.PartialMap() }

// Receiving is the set of chunks (in the store's chunk size, the cluster's piece size) the fetch
// is receiving from an origin stream landing in order: the ones just past its prefix (4 MiB),
// which peers may ask for and get as they land (cut-through). Nil when the fetch is not such a
// stream. A swarm's own requests are not offered: a node receiving a chunk from a peer sends it
// on no faster than it receives it, and a chain of them keeps upload slots waiting (measured:
// docs/benchmarks-rollout.md, "Pieces"); its peers take the pieces once it holds them.
func (c *InFlight) Receiving() *chunks.Set {
	f := c.f
	f.mu.Lock()
	inOrder, done := f.inOrder, f.done
	f.mu.Unlock()
	if done || !inOrder {
		return nil
	}
	ps := f.p.chunkSize
	out := chunks.NewSet(chunks.Count(f.size, ps))
	first := int(f.w.Written() / ps)
	for i := first; i < first+max(1, int(chunks.DefaultSize/ps)); i++ {
		out.Add(i)
	}
	return out
}

// Offers reports whether the byte at off is held verified, released, or in a chunk being
// received: a swarm request for it will be served without waiting out a request that is not
// coming.
func (c *InFlight) Offers(off int64) bool {
	visible, done, _, err := c.f.state()
	if off < visible || (done && err == nil) || c.f.w.Holds(off, 1) {
		return true
	}
	recv := c.Receiving()
	return recv != nil && recv.Has(int(off/c.f.p.chunkSize))
}

// Holding is the set of chunks held verified and a channel closed at the next change; more is
// false once no more chunks will come.
func (c *InFlight) Holding() (have *chunks.Set, changed <-chan struct{}, more bool) {
	_, done, wake, _ := c.f.state()
	return c.f.w.Held(), wake, !done
}
