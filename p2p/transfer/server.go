package transfer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
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
	"github.com/shoal-oci/shoal/internal/throttle"
)

// Blob is committed content opened for a peer. The server closes it.
type Blob interface {
	io.ReaderAt
	io.Closer
	Size() int64
	// MediaType is set for manifests.
	MediaType() string
}

// Content is what a node offers its peers. Implementations return errors wrapping
// errdefs.ErrNotFound for content they do not hold committed: peers never cause a fetch.
type Content interface {
	OpenContent(d digest.Digest) (Blob, error)
	ChunkMap(ctx context.Context, d digest.Digest, chunkSize int64) (*chunks.Map, error)
	TagRecords(registry, repo, tag string) ([]tags.Record, error)
}

// Puller is implemented by Content that can fetch a blob from an origin on a peer's behalf.
// Pull returns once the fetch has started (or the content is held): errdefs.ErrNotFound if the
// origin has no such blob, errdefs.ErrNotConfigured if the registry is not one of this node's,
// errdefs.ErrTooManyRequests to decline for now (answered busy: the peer fetches elsewhere). The
// asking peer is RemotePeer(ctx).
type Puller interface {
	Pull(ctx context.Context, registry, repo string, d digest.Digest) error
}

// Resolver is implemented by Content that resolves tags for the cluster, as the tag's
// coordinator: at the origin (one request per tag and short interval, however many nodes ask)
// or, when the origin cannot answer, from the last resolution known. The asking peer is
// RemotePeer(ctx); errdefs.ErrTooManyRequests is answered busy.
type Resolver interface {
	Resolve(ctx context.Context, registry, repo, tag string, accept []string) (tags.Record, error)
}

// Access is what a peer's request names: the operation, the content or tag it asks for, the
// repository it asks for it under ("" when it named none) and the credential of the client it
// asks for.
type Access struct {
	Op       string
	Digest   digest.Digest
	Registry string
	Repo     string
	Tag      string
	// Credential is the forwarded credential; never log it (its String is a hash).
	Credential credential.Credential
}

// Authorizer is implemented by Content that decides which requests it answers: before every
// get, map, tag, resolve and pull, Authorize returns nil to serve it, an error wrapping
// errdefs.ErrUnauthorized to refuse it (the peer sees 401), or another class.
type Authorizer interface {
	Authorize(ctx context.Context, a Access) error
}

// Holder is implemented by Content that serves blobs it is still fetching, possibly out of
// order. Holding returns the chunks of d held verified (in the given chunk size) and a channel
// closed at the next change; ok is false when d is not in progress (held whole, or not at all).
type Holder interface {
	Holding(d digest.Digest, chunkSize int64) (have *chunks.Set, changed <-chan struct{}, ok bool)
}

// Receiver is implemented by Content that serves chunks of a blob while it is still receiving
// them (cut-through): Receiving returns the chunks of d (in the given chunk size) it is receiving
// now and will serve, each as soon as it verifies; nil when none or d is not in progress.
type Receiver interface {
	Receiving(d digest.Digest, chunkSize int64) *chunks.Set
}

// Arriving is implemented by a Blob still arriving: Offers reports whether the byte at off is
// held or being received. A swarm request for bytes that are not is answered busy at once rather
// than left to wait for bytes that may not come.
type Arriving interface {
	Offers(off int64) bool
}

// Observer is told what the server sent, for metrics: op is one of get, map, tag, pull and
// resolve, or "other" for an operation the server does not know.
type Observer interface {
	Served(op string, status int, bytes int64)
}

// Server answers peers' requests from Content.
type Server struct {
	content  Content
	log      *slog.Logger
	observer Observer
	upload   *throttle.Limiter
	spread   spreader
	seeding  *seeder // nil: no super-seeding by copies
}

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithUploadSlots caps the swarm chunk requests (GetChunk) the server sends at once; more are
// answered busy, so requesters spread over other providers instead of each getting a sliver of
// this node's uplink and timing out. The default is DefaultUploadSlots.
func WithUploadSlots(n int) ServerOption { return func(s *Server) { s.spread.slots = max(n, 1) } }

// DefaultUploadSlots is the default for WithUploadSlots, and what UploadSlotsFor gives a node
// with no upload limit.
const DefaultUploadSlots = 2

// SlotRate is the upload rate UploadSlotsFor gives each slot at least, and maxUploadSlots the
// most slots it gives.
const (
	SlotRate       = 1 << 20
	maxUploadSlots = 8
)

// UploadSlotsFor sizes the upload slots to a node's upload limit (bytes/s; 0: none): one slot per
// SlotRate, from 2 to 8. A requester has up to 4 chunk requests open, each getting about a quarter
// of its download link, so with equal links a provider needs about 4 slots to fill its uplink; a
// slot slower than SlotRate moves a 4 MiB chunk in more than 4 s a hop, which costs a rollout
// more than an idle share of the uplink. Without a limit, the link is not known and the default
// stays.
func UploadSlotsFor(rate int64) int {
	if rate <= 0 {
		return DefaultUploadSlots
	}
	return int(min(max(rate/SlotRate, DefaultUploadSlots), maxUploadSlots))
}

// WithUploadLimit paces every body the server sends through l, shared by all peers.
func WithUploadLimit(l *throttle.Limiter) ServerOption {
	return func(s *Server) { s.upload, s.spread.spare = l, l.Spare }
}

// NewServer registers the protocol handler on h. obs may be nil.
func NewServer(h host.Host, content Content, log *slog.Logger, obs Observer, opts ...ServerOption) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{content: content, log: log, observer: obs, spread: spreader{slots: DefaultUploadSlots}}
	for _, o := range opts {
		o(s)
	}
	h.SetStreamHandler(ProtocolID, s.handle)
	return s
}

func (s *Server) handle(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(requestTimeout + mapWait))
	var req request
	if err := readFrame(bufio.NewReaderSize(st, 512), maxRequestFrame, &req); err != nil {
		_ = st.Reset()
		return
	}
	log := s.log.With("peer", st.Conn().RemotePeer().String(), "op", opLabel(req.Op), "digest", req.Digest)
	status, n, err := s.serve(st, &req)
	if s.observer != nil {
		s.observer.Served(opLabel(req.Op), status, n)
	}
	if err != nil {
		log.Debug("peer request failed", "status", status, "bytes", n, "err", err)
		if n > 0 {
			_ = st.Reset() // the body is incomplete: the peer must see a failure, not EOF
		}
		return
	}
	log.Debug("peer request served", "status", status, "bytes", n)
}

// serve answers one request and returns its status and the body bytes written.
func (s *Server) serve(st network.Stream, req *request) (int, int64, error) {
	fail := func(err error) (int, int64, error) {
		status := statusOf(err)
		_ = writeFrame(st, response{Status: status, Error: publicMessage(err)})
		return status, 0, err
	}
	switch req.Op {
	case opGet, opMap, opPull:
		if err := req.Digest.Validate(); err != nil {
			return fail(fmt.Errorf("digest: %w", errdefs.ErrInvalid))
		}
	}
	if az, ok := s.content.(Authorizer); ok {
		switch req.Op {
		case opGet, opMap, opTag, opResolve, opPull:
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout-time.Second)
			err := az.Authorize(ctx, Access{Op: req.Op, Digest: req.Digest, Registry: req.Registry, Repo: req.Repo,
				Tag: req.Tag, Credential: credential.FromHeader(req.Auth)})
			cancel()
			if err != nil {
				return fail(err)
			}
		}
	}
	switch req.Op {
	case opGet:
		from := st.Conn().RemotePeer()
		if req.Spread {
			if ok, chunk, to := s.spread.admit(req.Digest, req.Offset, req.Length, from, time.Now()); !ok {
				status := statusBusy
				msg := "upload slots taken; ask again shortly"
				if chunk {
					msg = "chunk being sent to other peers; take it from them"
				}
				_ = writeFrame(st, response{Status: status, Error: msg, ChunkBusy: chunk, Holders: encodeHolders(to)})
				return status, 0, nil
			}
			defer s.spread.release(req.Digest, req.Offset, req.Length, from)
		}
		b, err := s.content.OpenContent(req.Digest)
		if err != nil {
			return fail(err)
		}
		defer b.Close()
		if a, ok := b.(Arriving); ok && req.Spread && req.Offset < b.Size() && !a.Offers(req.Offset) {
			status := statusBusy
			_ = writeFrame(st, response{Status: status, Error: "not receiving these bytes now; take them elsewhere"})
			return status, 0, nil
		}
		size := b.Size()
		off, n := req.Offset, req.Length
		if n < 0 || (req.UpTo && off <= size && off+n > size) {
			n = size - off
		}
		if off < 0 || off > size || n < 0 || off+n > size {
			status := statusRangeError
			_ = writeFrame(st, response{Status: status, Size: size, Error: "range not satisfiable"})
			return status, 0, fmt.Errorf("range %d+%d of %d: %w", off, n, size, errdefs.ErrInvalid)
		}
		seeded, pa, pb := false, int64(0), int64(0)
		if req.Spread {
			if first, end, ok := s.superSeeds(req.Digest, off, n, size); ok {
				if ok, to := s.seeding.admit(req.Digest, first, end, from, time.Now()); !ok {
					status := statusBusy
					_ = writeFrame(st, response{Status: status, Error: "chunk already sent; take it from the peers that hold it", ChunkBusy: true,
						Holders: encodeHolders([]peer.ID{to})})
					return status, 0, nil
				}
				seeded, pa, pb = true, first, end
			}
		}
		if err := writeFrame(st, response{Status: statusOK, Size: size, MediaType: b.MediaType(), Length: n}); err != nil {
			if seeded {
				s.seeding.failed(req.Digest, pa, pb)
			}
			return statusOK, 0, err
		}
		dw := &deadlineWriter{st: st}
		if req.Spread {
			// A swarm chunk holds one of few upload slots: a reader slower than spreadMinRate
			// (after a grace) loses it, as a requester drops a provider that slow.
			dw.hard = time.Now().Add(spreadGrace + time.Duration(n*int64(time.Second)/spreadMinRate))
		}
		w := s.upload.Writer(context.Background(), dw)
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		written, err := io.CopyBuffer(w, io.NewSectionReader(b, off, n), *bp)
		if err == nil && written != n {
			err = io.ErrUnexpectedEOF
		}
		if seeded && err != nil {
			s.seeding.failed(req.Digest, pa, pb)
		}
		return statusOK, written, err
	case opMap:
		if err := validChunkSize(req.Digest.Algorithm(), req.ChunkSize); err != nil {
			return fail(err)
		}
		m, have, recv, err := s.mapAtLeast(req)
		if err != nil {
			return fail(err)
		}
		body, _ := m.MarshalBinary()
		resp := response{Status: statusOK, Size: m.Size, Partial: !m.Complete()}
		if req.OmitMap != "" && m.Complete() && digest.FromBytes(body) == req.OmitMap {
			resp.MapOmitted, body = true, nil
		}
		resp.Length = int64(len(body))
		if have != nil {
			resp.Have, _ = have.MarshalBinary()
		}
		if recv != nil {
			resp.Recv, _ = recv.MarshalBinary()
		}
		if err := writeFrame(st, resp); err != nil {
			return statusOK, 0, err
		}
		_ = st.SetWriteDeadline(time.Now().Add(stallTimeout))
		n, err := st.Write(body)
		return statusOK, int64(n), err
	case opTag:
		recs, err := s.content.TagRecords(req.Registry, req.Repo, req.Tag)
		if err != nil {
			return fail(err)
		}
		return writeJSON(st, recs, fail)
	case opResolve:
		rs, ok := s.content.(Resolver)
		if !ok || len(req.Accept) > 32 {
			return fail(fmt.Errorf("resolve: %w", errdefs.ErrUnsupported))
		}
		ctx, cancel := context.WithTimeout(withPeer(st, req), requestTimeout-time.Second)
		defer cancel()
		rec, err := rs.Resolve(ctx, req.Registry, req.Repo, req.Tag, req.Accept)
		if err != nil {
			return fail(err)
		}
		return writeJSON(st, rec, fail)
	case opPull:
		p, ok := s.content.(Puller)
		if !ok {
			return fail(fmt.Errorf("pull: %w", errdefs.ErrUnsupported))
		}
		ctx, cancel := context.WithTimeout(withPeer(st, req), requestTimeout-time.Second)
		defer cancel()
		if err := p.Pull(ctx, req.Registry, req.Repo, req.Digest); err != nil {
			return fail(err)
		}
		return statusOK, 0, writeFrame(st, response{Status: statusOK})
	default:
		return fail(fmt.Errorf("unknown op %q: %w", req.Op, errdefs.ErrInvalid))
	}
}

// superSeeds reports whether a swarm request for off+n of d is for pieces of a blob this node
// super-seeds, and which.
func (s *Server) superSeeds(d digest.Digest, off, n, size int64) (a, b int64, ok bool) {
	if s.seeding == nil {
		return 0, 0, false
	}
	a, b, ok = s.seeding.pieces(off, n, size)
	return a, b, ok && s.seeding.original(d)
}

type peerKey struct{}

// withPeer is a context carrying the peer that opened st, for RemotePeer, and the repository and
// credential its request names (credential.FromContext), which Authorize checked.
func withPeer(st network.Stream, req *request) context.Context {
	ctx := context.WithValue(context.Background(), peerKey{}, st.Conn().RemotePeer())
	return credential.NewContext(ctx, credential.Access{Registry: req.Registry, Repo: req.Repo,
		Credential: credential.FromHeader(req.Auth)})
}

// RemotePeer is the peer whose request a Puller or Resolver is serving.
func RemotePeer(ctx context.Context) (peer.ID, bool) {
	p, ok := ctx.Value(peerKey{}).(peer.ID)
	return p, ok
}

// publicMessage is what a peer may learn about a failure: the class, not local details.
func publicMessage(err error) string {
	for _, cls := range []error{errdefs.ErrNotFound, errdefs.ErrInvalid, errdefs.ErrUnsupported, errdefs.ErrTooManyRequests, errdefs.ErrUnavailable, errdefs.ErrUnauthorized, errdefs.ErrDenied} {
		if errors.Is(err, cls) {
			return cls.Error()
		}
	}
	return "internal error"
}

// deadlineWriter pushes the write deadline forward as bytes go out, so a stalled reader is cut
// off while a slow but moving one is not.
type deadlineWriter struct {
	st   network.Stream
	last time.Time
	hard time.Time // never extended past (zero: none)
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(w.last) > time.Second {
		d := now.Add(stallTimeout)
		if !w.hard.IsZero() && w.hard.Before(d) {
			d = w.hard
		}
		_ = w.st.SetWriteDeadline(d)
		w.last = now
	}
	return w.st.Write(p)
}

// mapAtLeast answers a map request, with the chunks held and being received of a blob in
// progress, waiting a little for such a blob to reach the states, held chunks or chunks offered
// (held or being received) asked for.
func (s *Server) mapAtLeast(req *request) (*chunks.Map, *chunks.Set, *chunks.Set, error) {
	timer := time.NewTimer(mapWait)
	defer timer.Stop()
	holder, _ := s.content.(Holder)
	receiver, _ := s.content.(Receiver)
	for {
		m, err := s.content.ChunkMap(context.Background(), req.Digest, req.ChunkSize)
		if err != nil {
			return nil, nil, nil, err
		}
		var have, recv *chunks.Set
		var changed <-chan struct{}
		inProgress := false
		if holder != nil {
			have, changed, inProgress = holder.Holding(req.Digest, req.ChunkSize)
		}
		count := chunks.Count(m.Size, m.ChunkSize)
		if have != nil && have.Len() != count {
			have = nil // not in the map's chunking: the prefix the map covers is what counts
		}
		if receiver != nil && inProgress {
			if recv = receiver.Receiving(req.Digest, req.ChunkSize); recv != nil && recv.Len() != count {
				recv = nil
			}
		}
		done := !inProgress || (req.MinStates == 0 && req.MinHave == 0 && req.MinOffer == 0) ||
			(req.MinStates > 0 && m.Len() >= req.MinStates) ||
			(req.MinHave > 0 && have != nil && have.Count() >= req.MinHave) ||
			(req.MinOffer > 0 && offered(have, recv) >= req.MinOffer)
		if done {
			return m, have, recv, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return m, have, recv, nil
		}
	}
}

// offered counts the chunks held or being received.
func offered(have, recv *chunks.Set) int {
	switch {
	case have == nil && recv == nil:
		return 0
	case recv == nil:
		return have.Count()
	case have == nil:
		return recv.Count()
	}
	u := have.Clone()
	u.AddAll(recv)
	return u.Count()
}

// Super-seeding: a provider sends one chunk to at most spreadFanout swarm requesters at a time
// and declines further swarm requests for it meanwhile (busy); they take it from the peers that
// are receiving it, once those hold it, or ask again shortly. A node that alone holds new chunks
// (the coordinator fetching from the origin) then spends its uplink on distinct chunks instead of
// sending each one to every node, and a chunk spreads through the swarm as a tree. All swarm
// requests together are capped by the server's upload slots.
const spreadFanout = 1

// firstFanout is spreadFanout for a blob's first bytes (a range at offset 0 of at most
// firstFanoutBytes: a first piece asked alone, or a small blob whole), which every requester's
// local client waits on for its first byte: a holder sends them to this many peers at once. A
// first piece is small beside an uplink, so the copies cost little time each, and the tree that
// spreads it is shallower: at one copy at a time every node waited through about log2(N) hops of
// store-and-forward.
const (
	firstFanout      = 3
	firstFanoutBytes = 1 << 20
)

// spreadMinRate and spreadGrace bound how long a swarm chunk may hold an upload slot.
const (
	spreadMinRate = 256 << 10
	spreadGrace   = 10 * time.Second
)

type spreadKey struct {
	d        digest.Digest
	off, len int64
}

// Extra upload slots. The slots are sized to the upload limit on the assumption that each gets a
// fair share of a requester's download link; a requester receiving from several providers at
// once takes a slot's bytes slower than that, and the slots are all taken while the uplink idles
// (a seed at 5 MB/s sent 3.3-3.7 MB/s in some seconds of a rollout while it answered hundreds of
// requests a second busy). While the upload limiter says the link is spare, one more request is
// admitted per extraSlotEvery, up to twice the slots (at most maxExtraSlots in all), so the link
// fills without a burst of admissions the meter has not seen yet.
const (
	extraSlotEvery = 250 * time.Millisecond
	maxExtraSlots  = 16
)

type spreader struct {
	mu      sync.Mutex
	slots   int
	total   int
	sending map[spreadKey][]peer.ID // the requesters each range is being sent to
	// spare reports whether the upload link carries less than it could (nil: not known), and
	// nextExtra is when a slot past slots may next be opened.
	spare     func() bool
	nextExtra time.Time
}

// admit reserves one of a chunk's sending slots for requester p; release returns it. When it
// cannot, chunk tells whether the chunk is what is busy (sent to spreadFanout peers already), not
// the slots, and to names the peers it is being sent to.
func (s *spreader) admit(d digest.Digest, off, n int64, p peer.ID, now time.Time) (ok, chunk bool, to []peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sending == nil {
		s.sending = map[spreadKey][]peer.ID{}
	}
	k := spreadKey{d, off, n}
	fanout := spreadFanout
	if off == 0 && n <= firstFanoutBytes {
		fanout = firstFanout
	}
	if len(s.sending[k]) >= fanout {
		return false, true, slices.Clone(s.sending[k])
	}
	if s.total >= s.slots {
		if s.total >= min(2*s.slots, max(s.slots, maxExtraSlots)) || now.Before(s.nextExtra) || s.spare == nil || !s.spare() {
			return false, false, nil
		}
		s.nextExtra = now.Add(extraSlotEvery)
	}
	s.sending[k] = append(s.sending[k], p)
	s.total++
	return true, false, nil
}

func (s *spreader) release(d digest.Digest, off, n int64, p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := spreadKey{d, off, n}
	s.total--
	to := s.sending[k]
	if i := slices.Index(to, p); i >= 0 {
		to = slices.Delete(to, i, i+1)
	}
	if len(to) == 0 {
		delete(s.sending, k)
	} else {
		s.sending[k] = to
	}
}

// writeJSON answers with v as a JSON body of at most maxTagBody bytes.
func writeJSON(st network.Stream, v any, fail func(error) (int, int64, error)) (int, int64, error) {
	body, err := jsonBody(v, maxTagBody)
	if err != nil {
		return fail(err)
	}
	if err := writeFrame(st, response{Status: statusOK, Length: int64(len(body))}); err != nil {
		return statusOK, 0, err
	}
	n, err := st.Write(body)
	return statusOK, int64(n), err
}
