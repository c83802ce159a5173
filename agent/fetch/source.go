package fetch

import (
	"context"
	"errors"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/chunks"
)

// Source is one place the pipeline can get a whole blob from, tried in order after the local
// store: peers, then the origin.
type Source interface {
	// Name labels the source in metrics and logs ("peer", "origin").
	Name() string
	// FetchBlob opens blob d from byte off on (off > 0 resumes after another source failed);
	// size is the blob's size when already known, else -1. A known size is bound (it came from
	// metadata the node trusts, see Sizer): the source delivers a blob of exactly that size or
	// fails. It returns the body and the whole blob's size (-1 when unknown), which the pipeline
	// takes as the blob's size only from the origin, or when it equals the bound, or when the
	// source verified the whole blob against its digest before returning it. The body is either an io.ReadCloser, the unverified stream
	// from off that the pipeline lands and hashes in order, or a Filler, which lands the bytes
	// through the Sink itself.
	//
	// Any error from FetchBlob sends the pipeline to the next source. Once bytes are landing,
	// ErrDigestMismatch and context errors end the fetch; another failure resumes it from the
	// next source (or the origin again) at the verified prefix.
	FetchBlob(ctx context.Context, t Target, d digest.Digest, off, size int64) (io.Closer, int64, error)
}

// Sizer binds a blob's size before any byte of it from a peer is accepted, from metadata the
// node trusts: its own records of the manifests it verified, the origin (a HEAD), or an
// authorized seed. Never from another peer: a peer's size is a claim, and a forged one would
// become the client's Content-Length and the store's reservation. It fails with an error
// wrapping errdefs.ErrNotFound when the origin has no such blob and no seed holds it, or
// errdefs.ErrUnavailable when nobody trusted can say now.
type Sizer interface {
	BlobSize(ctx context.Context, t Target, d digest.Digest) (int64, error)
}

// ErrNextSource is what a source answers when it does not supply a blob this time and the
// pipeline should go on to the next one: the peer source when this node is the blob's
// coordinator, or the coordinator did not take the fetch. It is not a verdict on the blob
// (ErrNotFound says the blob does not exist where it was asked for).
var ErrNextSource = errors.New("this source does not supply the blob; the next one does")

// Filler is a source body that lands the blob out of order: the swarm's chunks, each verified
// against a chunk map, or parallel origin ranges, hashed in order as the prefix completes.
// Fill returns nil once the whole blob is in the sink.
type Filler interface {
	io.Closer
	Fill(ctx context.Context, s Sink) error
}

// StateSource is a Filler whose chunks were verified against chain states that others supplied
// (peers' chunk maps). If the pipeline resumes from the prefix such a Filler left and the blob
// then fails its digest, one of those states was forged: StatesForged is called, stops taking
// the blob from the suppliers of the states beyond what a partial file brought for a while, and
// returns who they were (none: the failure is the resuming source's own).
type StateSource interface {
	StatesForged() []string
}

// Sink is where a Filler lands a blob: the fetch's partial file in the store. Writes are not
// visible to anyone until verified; Publish makes what is verified visible and announces the
// blob to the cluster once a whole chunk of it is held. Its methods are safe for concurrent use.
type Sink interface {
	// Size is the blob's size.
	Size() int64
	// Written is the verified contiguous prefix.
	Written() int64
	// Held is the set of chunks held verified (a copy).
	Held() *chunks.Set
	// WriteAt writes bytes at off; they count only once verified (MarkChunk) or absorbed.
	WriteAt(p []byte, off int64) (int, error)
	// Absorb hashes the bytes written in order from Written up to upTo, extending the prefix.
	Absorb(upTo int64) error
	// MarkChunk records chunk i, verified against m, as held.
	MarkChunk(i int, m *chunks.Map) error
	// Publish releases the verified prefix to local clients (all but the blob's last byte,
	// which waits for the digest) and, from the first whole chunk held, announces the blob.
	Publish()
}
