// Package transfer is Shoal's peer protocol for content: byte ranges of blobs and manifests (held
// committed, or verified chunks of a blob still arriving), their chunk maps and the chunks held,
// and the tag resolutions a peer has seen. It runs over libp2p streams (TLS over TCP between
// cluster members) and knows nothing of HTTP or the store: a Content implementation answers for
// the local node.
//
// Only two operations make a node do work beyond answering from what it holds, and only as a
// coordinator: a "pull" asks it to fetch a blob from a configured origin for the cluster (the
// answer comes once the fetch has started, and the blob is then provided and served while it
// arrives), and a "resolve" asks it what a tag names.
//
// A request for content carries the repository it is for and the credential of the client it
// is for; a node's Content may refuse a private repository's content to a credential its origin
// does not accept (Authorizer).
//
// Wire format, one request per stream: the requester writes a frame, the server answers with a
// frame and, for "get", "map", "tag" and "resolve", a body of exactly the announced length, then
// closes.
// A frame is a uvarint length followed by that many bytes of JSON. Requests are at most 12 KiB
// and response headers at most 64 KiB; every read and write has a deadline.
package transfer

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

// ProtocolID is the versioned protocol; an incompatible change gets a new version. Version 2:
// maps are in pieces (finer than the chunks a swarm asks for), a map answer says which pieces
// the provider is receiving, and a chunk request may be for pieces still arriving (cut-through).
const ProtocolID protocol.ID = "/shoal/content/2"

const (
	// maxRequestFrame leaves room for a forwarded credential (credential.MaxLen).
	maxRequestFrame = 12 << 10
	// maxResponseFrame leaves room for two piece bitmaps of a map of chunks.MaxChunks, in JSON.
	maxResponseFrame = 128 << 10
	// maxTagBody bounds a tag answer.
	maxTagBody = 64 << 10
	// requestTimeout bounds reading a request and writing a response header.
	requestTimeout = 10 * time.Second
	// stallTimeout fails a body transfer that moves no byte for this long.
	stallTimeout = 15 * time.Second
)

const (
	opGet     = "get"
	opMap     = "map"
	opTag     = "tag"
	opPull    = "pull"
	opResolve = "resolve"
)

// opLabel is the operation as the Observer and logs see it: one of the operations, or "other"
// for a name a peer made up, so that metric labels come from a fixed set.
func opLabel(op string) string {
	switch op {
	case opGet, opMap, opTag, opPull, opResolve:
		return op
	}
	return "other"
}

// mapWait bounds how long a map request waits for a provider still fetching a blob to reach the
// states asked for.
const mapWait = 5 * time.Second

// request is what a peer asks.
type request struct {
	Op     string        `json:"op"`
	Digest digest.Digest `json:"digest,omitempty"`
	// Offset and Length select a byte range for get; Length < 0 means to the end.
	Offset int64 `json:"offset,omitempty"`
	Length int64 `json:"length,omitempty"`
	// UpTo makes Length a maximum: the range ends at the blob's end if that comes first.
	UpTo      bool  `json:"upTo,omitempty"`
	ChunkSize int64 `json:"chunkSize,omitempty"`
	// MinStates asks a provider still fetching the blob to wait (a few seconds at most) until
	// its map has that many states.
	MinStates int `json:"minStates,omitempty"`
	// MinHave asks a provider still fetching the blob to wait (a few seconds at most) until it
	// holds that many chunks. With MinStates, whichever comes first ends the wait: a peer
	// watching a provider asks for one more of either and hears of each gain at once.
	MinHave int `json:"minHave,omitempty"`
	// MinOffer asks a provider still fetching the blob to wait (a few seconds at most, like
	// MinStates and MinHave) until it holds or is receiving that many chunks in all.
	MinOffer int `json:"minOffer,omitempty"`
	// OmitMap is the digest of the complete chunk map the requester has (of its binary
	// encoding): a provider whose map is complete and has that digest answers with its holdings
	// only (MapOmitted, no body). A watcher asks several times a second, and a map is 32 bytes
	// per piece (64 KiB for a 1 GiB blob in 512 KiB pieces). A provider whose map is
	// another (its fetch started over on a different map) sends it, so that the requester sees
	// the disagreement.
	OmitMap digest.Digest `json:"omitMap,omitempty"`
	// Spread marks a chunk request from a swarm: the requester can take the chunk elsewhere, so
	// a provider that has just sent it to enough peers may answer busy (see Server).
	Spread bool `json:"spread,omitempty"`
	// Registry, Repo and Tag name a tag for the tag op.
	Registry string `json:"registry,omitempty"`
	Repo     string `json:"repo,omitempty"`
	Tag      string `json:"tag,omitempty"`
	// Accept is the client's media types, for resolve.
	Accept []string `json:"accept,omitempty"`
	// Auth is the requesting node's client's credential (its Authorization header) for
	// Registry and Repo: a server serves a private repository's content only to a credential
	// the origin accepts for it. For get and map, Registry and Repo name the repository the
	// content is asked for; absent, the content is asked for without one.
	Auth string `json:"auth,omitempty"`
}

// response is the header of an answer.
type response struct {
	Status    int    `json:"status"`
	Error     string `json:"error,omitempty"`
	Size      int64  `json:"size,omitempty"`
	MediaType string `json:"mediaType,omitempty"`
	// Length is the number of body bytes that follow.
	Length int64 `json:"length,omitempty"`
	// Partial marks a chunk map of a blob the provider is still fetching.
	Partial bool `json:"partial,omitempty"`
	// Have is, for a blob the provider is still fetching, the chunks it holds verified (a
	// little-endian bitmap, chunks.Set); absent when it holds the whole blob or the prefix the
	// map covers.
	Have []byte `json:"have,omitempty"`
	// ChunkBusy marks a busy answer about the chunk asked for (being sent, or already sent, to
	// other peers), not about the provider: other chunks may be asked of it at once.
	ChunkBusy bool `json:"chunkBusy,omitempty"`
	// Recv is, for a blob the provider is still fetching, the chunks it is receiving now (same
	// encoding as Have): a chunk request for them is served as each one verifies there.
	Recv []byte `json:"recv,omitempty"`
	// MapOmitted answers a map request with OmitMap: the body is empty, and the map is the
	// complete one the requester has.
	MapOmitted bool `json:"mapOmitted,omitempty"`
	// Holders, with ChunkBusy, are the peers the provider is sending the chunk's first piece to,
	// or sent it to lately (at most maxHolders peer IDs): where to take it instead. A hint only:
	// the bytes are verified wherever they come from.
	Holders []string `json:"holders,omitempty"`
}

// maxHolders bounds the peers a busy answer names.
const maxHolders = 4

// Status codes, HTTP-like for familiarity.
const (
	statusOK          = 200
	statusBadRequest  = 400
	statusDenied      = 401
	statusNotFound    = 404
	statusRangeError  = 416
	statusBusy        = 429
	statusUnavailable = 503
	statusInternal    = 500
)

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := binary.AppendUvarint(make([]byte, 0, len(b)+binary.MaxVarintLen64), uint64(len(b)))
	_, err = w.Write(append(buf, b...))
	return err
}

func readFrame(r *bufio.Reader, limit int, v any) error {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	if n > uint64(limit) {
		return fmt.Errorf("frame of %d bytes exceeds %d: %w", n, limit, errdefs.ErrInvalid)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("malformed frame: %w", errdefs.ErrInvalid)
	}
	return nil
}

// ErrBusy is a peer declining work for now: a provider a chunk it has just sent to enough other
// peers (the requester takes it from one of them, or asks again shortly), or a coordinator a pull
// or resolve past the asking peer's quota or its cap on origin fetches (the requester goes to the
// origin itself). It is not a failure of the peer.
var ErrBusy = fmt.Errorf("peer busy: %w", errdefs.ErrUnavailable)

// ErrChunkBusy is ErrBusy about one chunk: the provider is sending it, or has sent it, to other
// peers, who will hold it in a moment; it may be asked for other chunks at once. The error
// returned is a *ChunkBusyError naming those peers when the provider did.
var ErrChunkBusy = fmt.Errorf("chunk being spread by this peer: %w", ErrBusy)

// ChunkBusyError is ErrChunkBusy with the peers the provider named as receiving or holding the
// chunk's first piece: the requester may take it from them as soon as they hold it, rather than
// wait to hear of them through provider records.
type ChunkBusyError struct {
	Holders []peer.ID
}

func (e *ChunkBusyError) Error() string { return ErrChunkBusy.Error() }
func (e *ChunkBusyError) Unwrap() error { return ErrChunkBusy }

// holders decodes a busy answer's Holders: valid peer IDs other than the provider itself, at
// most maxHolders.
func holders(ids []string, from peer.ID) []peer.ID {
	var out []peer.ID
	for _, s := range ids {
		if len(out) == maxHolders {
			break
		}
		p, err := peer.Decode(s)
		if err != nil || p == from || slices.Contains(out, p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// encodeHolders is the wire form of holders, at most maxHolders.
func encodeHolders(ps []peer.ID) []string {
	var out []string
	for _, p := range ps {
		if p != "" && len(out) < maxHolders {
			out = append(out, p.String())
		}
	}
	return out
}

// statusError turns the response status of provider p into an error class.
func statusError(resp *response, p peer.ID) error {
	cls := errdefs.ErrUnavailable
	switch resp.Status {
	case statusBusy:
		if resp.ChunkBusy {
			if hs := holders(resp.Holders, p); len(hs) > 0 {
				return &ChunkBusyError{Holders: hs}
			}
			return ErrChunkBusy
		}
		return ErrBusy
	case statusNotFound:
		cls = errdefs.ErrNotFound
	case statusDenied:
		cls = errdefs.ErrUnauthorized
	case statusBadRequest, statusRangeError:
		cls = errdefs.ErrInvalid
	}
	msg := resp.Error
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return fmt.Errorf("peer answered %d %q: %w", resp.Status, msg, cls)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, errdefs.ErrTooManyRequests):
		return statusBusy
	case errors.Is(err, errdefs.ErrNotFound):
		return statusNotFound
	case errors.Is(err, errdefs.ErrUnauthorized), errors.Is(err, errdefs.ErrDenied):
		return statusDenied
	case errors.Is(err, errdefs.ErrInvalid), errors.Is(err, errdefs.ErrUnsupported):
		return statusBadRequest
	case errors.Is(err, errdefs.ErrUnavailable):
		return statusUnavailable
	default:
		return statusInternal
	}
}

// Validate chunk sizes asked by peers with the same rule as local maps.
var validChunkSize = chunks.ValidChunkSize
