package transfer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/tags"
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// Client asks peers for content.
type Client struct {
	h host.Host
}

// NewClient returns a client that opens streams from h.
func NewClient(h host.Host) *Client { return &Client{h: h} }

// Range is an open byte range from a peer. Its bytes are unverified: the caller checks them.
type Range struct {
	io.ReadCloser
	// Size is the whole blob's size as the peer reports it.
	Size int64
	// MediaType is the peer's media type for a manifest.
	MediaType string
	// Length is the number of bytes the body will carry.
	Length int64
}

// ctxStream is a stream reset when its request's context ends, so that a cancelled request
// (a long-polled map, a chunk another peer delivered first) returns at once instead of at its
// deadline. Closing or resetting it detaches it from the context.
type ctxStream struct {
	network.Stream
	stop func() bool
}

func (s ctxStream) Close() error { s.stop(); return s.Stream.Close() }
func (s ctxStream) Reset() error { s.stop(); return s.Stream.Reset() }

// roundTrip sends req to p. The repository and credential a request is for come from ctx
// (credential.NewContext): a serving node needs them to answer for a private repository.
func (c *Client) roundTrip(ctx context.Context, p peer.ID, req request) (network.Stream, *bufio.Reader, *response, error) {
	if a, ok := credential.FromContext(ctx); ok {
		if req.Repo == "" && a.Repo != "" {
			req.Registry, req.Repo = a.Registry, a.Repo
		}
		if req.Registry == a.Registry && req.Repo == a.Repo {
			req.Auth = a.Credential.Header()
		}
	}
	raw, err := c.h.NewStream(ctx, p, ProtocolID)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("stream to %s: %v: %w", p, err, errdefs.ErrUnavailable)
	}
	st := ctxStream{Stream: raw, stop: context.AfterFunc(ctx, func() { _ = raw.Reset() })}
	deadline := time.Now().Add(requestTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = st.SetDeadline(deadline)
	if err := writeFrame(st, req); err != nil {
		_ = st.Reset()
		return nil, nil, nil, fmt.Errorf("request to %s: %v: %w", p, err, errdefs.ErrUnavailable)
	}
	_ = st.CloseWrite()
	br := bufio.NewReaderSize(st, 64<<10)
	var resp response
	if err := readFrame(br, maxResponseFrame, &resp); err != nil {
		_ = st.Reset()
		return nil, nil, nil, fmt.Errorf("response from %s: %v: %w", p, err, errdefs.ErrUnavailable)
	}
	if resp.Status != statusOK {
		_ = st.Close()
		return nil, nil, &resp, statusError(&resp, p)
	}
	if resp.Length < 0 {
		_ = st.Reset()
		return nil, nil, nil, fmt.Errorf("response from %s: negative length: %w", p, errdefs.ErrInvalid)
	}
	return st, br, &resp, nil
}

// Get opens bytes [off, off+n) of d at peer p (n < 0: to the end). ctx bounds the request and
// the whole transfer; a body that stalls fails after the stall timeout.
func (c *Client) Get(ctx context.Context, p peer.ID, d digest.Digest, off, n int64) (*Range, error) {
	return c.get(ctx, p, request{Op: opGet, Digest: d, Offset: off, Length: n})
}

func (c *Client) get(ctx context.Context, p peer.ID, req request) (*Range, error) {
	off, n := req.Offset, req.Length
	st, br, resp, err := c.roundTrip(ctx, p, req)
	if err != nil {
		return nil, err
	}
	short := req.UpTo && resp.Length < n && off+resp.Length == resp.Size
	if n >= 0 && resp.Length != n && !short || off+resp.Length > resp.Size {
		_ = st.Reset()
		return nil, fmt.Errorf("peer %s sent length %d for a range of %d: %w", p, resp.Length, n, errdefs.ErrInvalid)
	}
	body := &streamBody{st: st, r: br, left: resp.Length, ctx: ctx}
	return &Range{ReadCloser: body, Size: resp.Size, MediaType: resp.MediaType, Length: resp.Length}, nil
}

// Map fetches the chunk map of d at peer p: complete, or partial when p is still fetching d (see
// MapAtLeast). The map is checked for shape only; chunks prove it.
func (c *Client) Map(ctx context.Context, p peer.ID, d digest.Digest, chunkSize int64) (*chunks.Map, error) {
	return c.MapAtLeast(ctx, p, d, chunkSize, 0)
}

// MapAtLeast is Map asking a provider still fetching d to wait, a few seconds at most, until its
// map has minStates states.
func (c *Client) MapAtLeast(ctx context.Context, p peer.ID, d digest.Digest, chunkSize int64, minStates int) (*chunks.Map, error) {
	m, _, err := c.Holding(ctx, p, d, chunkSize, minStates, 0)
	return m, err
}

// Holding fetches p's chunk map of d and the chunks p holds: all of them for a blob p holds
// whole, else the set p reports (for a provider that does not say, the prefix its map covers).
// A provider still fetching d waits, a few seconds at most, until its map has minStates states
// or it holds minHave chunks (zero: no wait for that); a watcher asks for one more of each.
// The map is checked for shape only; chunks prove it.
func (c *Client) Holding(ctx context.Context, p peer.ID, d digest.Digest, chunkSize int64, minStates, minHave int) (*chunks.Map, *chunks.Set, error) {
	h, err := c.Watch(ctx, p, d, chunkSize, Want{MinStates: minStates, MinHave: minHave})
	if err != nil {
		return nil, nil, err
	}
	return h.Map, h.Have, nil
}

// Want is what a watcher waits for at a provider still fetching a blob (zero fields: no wait for
// that): a map of MinStates states, MinHave chunks held, or MinOffer chunks held or being
// received. Whichever comes first ends the wait, a few seconds at most.
type Want struct {
	MinStates, MinHave, MinOffer int
	// Known is the blob's complete map as the provider sent it before, if the watcher has it:
	// a provider whose map is complete then sends only its holdings, and Known is the answer's
	// map. KnownDigest, if set, is the digest of Known's encoding (computed otherwise).
	Known       *chunks.Map
	KnownDigest digest.Digest
}

// Holdings is what a provider says it has of a blob: its chunk map, the chunks it holds, and the
// chunks it is receiving now (empty for a provider that holds the blob whole or does not say),
// which it serves as each one verifies there.
type Holdings struct {
	Map  *chunks.Map
	Have *chunks.Set
	Recv *chunks.Set
}

// Watch is Holding that also learns the chunks p is receiving, and may wait for more of them.
func (c *Client) Watch(ctx context.Context, p peer.ID, d digest.Digest, chunkSize int64, want Want) (*Holdings, error) {
	known := want.Known
	var omit digest.Digest
	if known != nil && known.Complete() && known.Digest == d && known.ChunkSize == chunkSize {
		omit = want.KnownDigest
		if omit == "" {
			b, _ := known.MarshalBinary()
			omit = digest.FromBytes(b)
		}
	} else {
		known = nil
	}
	st, br, resp, err := c.roundTrip(ctx, p, request{Op: opMap, Digest: d, ChunkSize: chunkSize,
		MinStates: want.MinStates, MinHave: want.MinHave, MinOffer: want.MinOffer, OmitMap: omit})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	m := known
	if resp.MapOmitted {
		if known == nil || resp.Length != 0 {
			_ = st.Reset()
			return nil, fmt.Errorf("peer %s omitted a chunk map it was not told of: %w", p, errdefs.ErrInvalid)
		}
	} else {
		limit := int64(chunks.MaxChunks*64 + 1024)
		if resp.Length > limit {
			_ = st.Reset()
			return nil, fmt.Errorf("chunk map of %d bytes from %s: %w", resp.Length, p, errdefs.ErrInvalid)
		}
		b := make([]byte, resp.Length)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, fmt.Errorf("chunk map from %s: %v: %w", p, err, errdefs.ErrUnavailable)
		}
		m = new(chunks.Map)
		if err := m.UnmarshalBinary(b); err != nil {
			return nil, err
		}
	}
	if m.Digest != d || m.ChunkSize != chunkSize {
		return nil, fmt.Errorf("peer %s sent a map for %s/%d: %w", p, m.Digest, m.ChunkSize, errdefs.ErrInvalid)
	}
	count := chunks.Count(m.Size, m.ChunkSize)
	recv := chunks.NewSet(count)
	if resp.Recv != nil {
		if recv, err = chunks.SetFromBinary(resp.Recv, count); err != nil {
			return nil, fmt.Errorf("chunk set from %s: %w", p, err)
		}
	}
	if resp.Have != nil {
		have, err := chunks.SetFromBinary(resp.Have, count)
		if err != nil {
			return nil, fmt.Errorf("chunk set from %s: %w", p, err)
		}
		return &Holdings{Map: m, Have: have, Recv: recv}, nil
	}
	have := chunks.NewSet(count)
	held := m.Len()
	if !m.Complete() {
		held-- // the last state of a partial map is the boundary reached, not a chunk held
	}
	for i := range held {
		have.Add(i)
	}
	return &Holdings{Map: m, Have: have, Recv: recv}, nil
}

// GetChunk is Get of one chunk for a swarm: a provider busy sending it to other peers, or out of
// upload slots, declines with ErrBusy (the requester takes it elsewhere or asks again). With
// upTo, n is a maximum: the range ends early at the blob's end, so one round trip learns a
// blob's size and its first bytes, or all of a small one.
func (c *Client) GetChunk(ctx context.Context, p peer.ID, d digest.Digest, off, n int64, upTo bool) (*Range, error) {
	return c.get(ctx, p, request{Op: opGet, Digest: d, Offset: off, Length: n, UpTo: upTo, Spread: true})
}

// Pull asks peer p, the digest's coordinator, to fetch d from the origin registry for the cluster.
// It returns once p has started (p then provides d and serves it as it arrives).
func (c *Client) Pull(ctx context.Context, p peer.ID, registry, repo string, d digest.Digest) error {
	st, _, _, err := c.roundTrip(ctx, p, request{Op: opPull, Digest: d, Registry: registry, Repo: repo})
	if err != nil {
		return err
	}
	return st.Close()
}

// Resolve asks peer p, the tag's coordinator, what the tag names for the given Accept list.
func (c *Client) Resolve(ctx context.Context, p peer.ID, registry, repo, tag string, accept []string) (tags.Record, error) {
	st, br, resp, err := c.roundTrip(ctx, p, request{Op: opResolve, Registry: registry, Repo: repo, Tag: tag, Accept: accept})
	if err != nil {
		return tags.Record{}, err
	}
	defer st.Close()
	if resp.Length > maxTagBody {
		_ = st.Reset()
		return tags.Record{}, fmt.Errorf("resolve answer of %d bytes: %w", resp.Length, errdefs.ErrInvalid)
	}
	b := make([]byte, resp.Length)
	if _, err := io.ReadFull(br, b); err != nil {
		return tags.Record{}, fmt.Errorf("resolve answer from %s: %v: %w", p, err, errdefs.ErrUnavailable)
	}
	var rec tags.Record
	if err := json.Unmarshal(b, &rec); err != nil || rec.Digest.Validate() != nil {
		return tags.Record{}, fmt.Errorf("resolve answer from %s: %w", p, errdefs.ErrInvalid)
	}
	return rec, nil
}

// Tags asks peer p which manifests it has seen a tag resolve to.
func (c *Client) Tags(ctx context.Context, p peer.ID, registry, repo, tag string) ([]tags.Record, error) {
	st, br, resp, err := c.roundTrip(ctx, p, request{Op: opTag, Registry: registry, Repo: repo, Tag: tag})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if resp.Length > maxTagBody {
		_ = st.Reset()
		return nil, fmt.Errorf("tag answer of %d bytes: %w", resp.Length, errdefs.ErrInvalid)
	}
	b := make([]byte, resp.Length)
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, fmt.Errorf("tag answer from %s: %v: %w", p, err, errdefs.ErrUnavailable)
	}
	var recs []tags.Record
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("tag answer from %s: %w", p, errdefs.ErrInvalid)
	}
	return recs, nil
}

// streamBody reads exactly left bytes from a stream, with a deadline pushed forward as bytes
// arrive. Close before the end resets the stream.
type streamBody struct {
	st   network.Stream
	r    *bufio.Reader
	left int64
	ctx  context.Context
	last time.Time
	done bool
	hard time.Time // a deadline the stall timer never extends past (zero: none)
}

// SetDeadline bounds all further reads of the range to t, however steadily bytes arrive: a
// peer trickling bytes keeps the stall timer happy but must not hold a transfer forever.
func (r *Range) SetDeadline(t time.Time) {
	if b, ok := r.ReadCloser.(*streamBody); ok {
		b.hard = t
		b.last = time.Time{} // apply at the next read
	}
}

func (b *streamBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if now := time.Now(); now.Sub(b.last) > time.Second {
		deadline := now.Add(stallTimeout)
		if d, ok := b.ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if !b.hard.IsZero() && b.hard.Before(deadline) {
			deadline = b.hard
		}
		_ = b.st.SetReadDeadline(deadline)
		b.last = now
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("peer %s: %v: %w", b.st.Conn().RemotePeer(), err, errdefs.ErrUnavailable)
	}
	return n, err
}

func (b *streamBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	if b.left > 0 {
		return b.st.Reset()
	}
	return b.st.Close()
}

func jsonBody(v any, limit int) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("answer of %d bytes: %w", len(b), errdefs.ErrTooLarge)
	}
	return b, nil
}
