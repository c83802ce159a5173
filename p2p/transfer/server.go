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
	"github.com/shoal-oci/shoal/internal/errdefs"
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
	TagRecords(registry, repo, tag string) ([]TagRecord, error)
}

// Puller is implemented by Content that can fetch a blob from an origin on a peer's behalf.
// Pull returns once the fetch has started (or the content is held): errdefs.ErrNotFound if the
// origin has no such blob, errdefs.ErrNotConfigured if the registry is not one of this node's.
type Puller interface {
	Pull(ctx context.Context, registry, repo string, d digest.Digest) error
}

// Resolver is implemented by Content that resolves tags for the cluster, as the tag's
// coordinator: at the origin (one request per tag and short interval, however many nodes ask)
// or, when the origin cannot answer, from the last resolution known.
type Resolver interface {
	Resolve(ctx context.Context, registry, repo, tag string, accept []string) (TagRecord, error)
}

// Holder is implemented by Content that serves blobs it is still fetching, possibly out of
// order. Holding returns the chunks of d held verified (in the given chunk size) and a channel
// closed at the next change; ok is false when d is not in progress (held whole, or not at all).
type Holder interface {
	Holding(d digest.Digest, chunkSize int64) (have *chunks.Set, changed <-chan struct{}, ok bool)
}

// Observer is told what the server sent, for metrics.
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
}

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithUploadLimit paces every body the server sends through l, shared by all peers.
func WithUploadLimit(l *throttle.Limiter) ServerOption { return func(s *Server) { s.upload = l } }

// NewServer registers the protocol handler on h. obs may be nil.
func NewServer(h host.Host, content Content, log *slog.Logger, obs Observer, opts ...ServerOption) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{content: content, log: log, observer: obs}
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
	log := s.log.With("peer", st.Conn().RemotePeer().String(), "op", req.Op, "digest", req.Digest)
	status, n, err := s.serve(st, &req)
	if s.observer != nil {
		s.observer.Served(req.Op, status, n)
	}
	if err != nil {
		log.Debug("peer request failed", "status", status, "bytes", n, "err", err)
		if n > 0 {
			_ = st.Reset() // the body is incomplete: the peer must see a failure, not EOF
		}
		return
	}
	log.Debug("peer request served", "bytes", n)
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
	switch req.Op {
	case opGet:
		if req.Spread && !s.spread.admit(st.Conn().RemotePeer(), req.Digest, req.Offset, req.Length) {
			status := statusBusy
			_ = writeFrame(st, response{Status: status, Error: "chunk just sent to other peers; take it from them"})
			return status, 0, nil
		}
		b, err := s.content.OpenContent(req.Digest)
		if err != nil {
			return fail(err)
		}
		defer b.Close()
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
		if err := writeFrame(st, response{Status: statusOK, Size: size, MediaType: b.MediaType(), Length: n}); err != nil {
			return statusOK, 0, err
		}
		w := s.upload.Writer(context.Background(), &deadlineWriter{st: st})
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		written, err := io.CopyBuffer(w, io.NewSectionReader(b, off, n), *bp)
		if err == nil && written != n {
			err = io.ErrUnexpectedEOF
		}
		return statusOK, written, err
	case opMap:
		if err := validChunkSize(req.Digest.Algorithm(), req.ChunkSize); err != nil {
			return fail(err)
		}
		m, have, err := s.mapAtLeast(req)
		if err != nil {
			return fail(err)
		}
		body, _ := m.MarshalBinary()
		resp := response{Status: statusOK, Size: m.Size, Length: int64(len(body)), Partial: !m.Complete()}
		if have != nil {
			resp.Have, _ = have.MarshalBinary()
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
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout-time.Second)
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
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout-time.Second)
		defer cancel()
		if err := p.Pull(ctx, req.Registry, req.Repo, req.Digest); err != nil {
			return fail(err)
		}
		return statusOK, 0, writeFrame(st, response{Status: statusOK})
	default:
		return fail(fmt.Errorf("unknown op %q: %w", req.Op, errdefs.ErrInvalid))
	}
}

// publicMessage is what a peer may learn about a failure: the class, not local details.
func publicMessage(err error) string {
	for _, cls := range []error{errdefs.ErrNotFound, errdefs.ErrInvalid, errdefs.ErrUnsupported, errdefs.ErrUnavailable} {
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
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(w.last) > time.Second {
		_ = w.st.SetWriteDeadline(now.Add(stallTimeout))
		w.last = now
	}
	return w.st.Write(p)
}

// mapAtLeast answers a map request, with the chunks held of a blob in progress, waiting a
// little for such a blob to reach the states or held chunks asked for.
func (s *Server) mapAtLeast(req *request) (*chunks.Map, *chunks.Set, error) {
	timer := time.NewTimer(mapWait)
	defer timer.Stop()
	holder, _ := s.content.(Holder)
	for {
		m, err := s.content.ChunkMap(context.Background(), req.Digest, req.ChunkSize)
		if err != nil {
			return nil, nil, err
		}
		var have *chunks.Set
		var changed <-chan struct{}
		inProgress := false
		if holder != nil {
			have, changed, inProgress = holder.Holding(req.Digest, req.ChunkSize)
		}
		if have != nil && have.Len() != chunks.Count(m.Size, m.ChunkSize) {
			have = nil // not in the map's chunking: the prefix the map covers is what counts
		}
		done := !inProgress || (req.MinStates == 0 && req.MinHave == 0) ||
			(req.MinStates > 0 && m.Len() >= req.MinStates) ||
			(req.MinHave > 0 && have != nil && have.Count() >= req.MinHave)
		if done {
			return m, have, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return m, have, nil
		}
	}
}

// Super-seeding: a chunk a provider has begun sending to spreadFanout peers within
// spreadWindow is declined to further swarm requests for it, which take it from those peers
// instead. A node that alone holds new chunks (the coordinator fetching from the origin) then
// sends each about spreadFanout times, not once per node, and its uplink goes to new chunks.
const (
	spreadFanout = 2
	spreadWindow = 1500 * time.Millisecond
	// spreadMax bounds the chunks remembered; older entries are dropped first.
	spreadMax = 4096
)

type spreadKey struct {
	d        digest.Digest
	off, len int64
}

type spreadEntry struct {
	since time.Time
	peers []peer.ID
}

type spreader struct {
	mu      sync.Mutex
	entries map[spreadKey]*spreadEntry
}

// admit records p asking for a chunk and reports whether to send it.
func (s *spreader) admit(p peer.ID, d digest.Digest, off, n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.entries == nil {
		s.entries = map[spreadKey]*spreadEntry{}
	}
	k := spreadKey{d, off, n}
	e, ok := s.entries[k]
	if !ok || now.Sub(e.since) > spreadWindow {
		if len(s.entries) >= spreadMax {
			for key, old := range s.entries {
				if now.Sub(old.since) > spreadWindow {
					delete(s.entries, key)
				}
			}
			if len(s.entries) >= spreadMax {
				clear(s.entries)
			}
		}
		s.entries[k] = &spreadEntry{since: now, peers: []peer.ID{p}}
		return true
	}
	if slices.Contains(e.peers, p) {
		return true
	}
	if len(e.peers) >= spreadFanout {
		return false
	}
	e.peers = append(e.peers, p)
	return true
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
