package agent_test

import (
	"bytes"
	"context"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// A provider that declines a blob's first piece because it sent it to another peer moments ago
// (super-seeding) names that peer, and the node takes the piece from it at once, although no
// provider record names it: before, the node heard of holders only through provider records,
// and here would have waited out the provider's hold (15 s) for its first byte. The provider and
// the holder are real libp2p peers speaking the real protocol; the holder counts what it serves.
func TestFirstPieceFromTheHolderABusyAnswerNames(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 16<<20)
	pushBlob(t, o, "test/hinted", data, d)
	content := pieceContent(t, data, d, chunks.DefaultPieceSize)
	seed := startPeer(t, t.TempDir(), nil, o.URL())

	// The original holder: super-seeding, it sends each piece once per hold.
	orig := startTestPeerWith(t, content(), nil, []transfer.ServerOption{transfer.WithSuperSeeding(chunks.DefaultPieceSize,
		chunks.DefaultSize, func(digest.Digest) bool { return true })}, seed.Node().Addrs()...)

	// The holder announces nothing.
	var served getBytes
	holder := startObservedTestPeer(t, content(), &served, seed.Node().Addrs()...)
	if err := holder.Host().Connect(context.Background(), peer.AddrInfo{ID: orig.Host().ID(), Addrs: orig.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	if err := orig.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	b := startAgentConfig(t, agent.Config{
		DataDir:    t.TempDir(),
		Registries: []string{o.URL()},
		P2P:        &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: seed.Node().Addrs()},
	})
	waitProvided(t, b, d.String())
	o.ResetCounts()

	// The holder takes the first piece from the original holder, just before the node asks.
	takePiece(t, holder, orig.Host().ID(), d, 0, chunks.DefaultPieceSize)
	pullFromHolder(t, o, b, "test/hinted", data, d, &served)
}

// takePiece has holder take n bytes at off of d from p as a swarm request: p, super-seeding,
// counts it as sent once it is received whole.
func takePiece(t *testing.T, holder *p2p.Node, p peer.ID, d digest.Digest, off, n int64) {
	t.Helper()
	r, err := transfer.NewClient(holder.Host()).GetChunk(context.Background(), p, d, off, n, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
}

// pullFromHolder GETs the blob through b and checks that it came whole from peers, the holder
// (which counts what it serves in served) among them.
func pullFromHolder(t *testing.T, o *devregistry.Registry, b *node, repo string, data []byte, d digest.Digest, served *getBytes) {
	t.Helper()
	start := time.Now()
	body, err := getBlob(t, b.host, repo, d)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("GET the blob: %v (%d bytes)", err, len(body))
	}
	if gets := o.BlobGets(d.String()); gets != 0 {
		t.Errorf("the origin was asked for the blob %d times", gets)
	}
	if served.n.Load() == 0 {
		t.Fatalf("the holder the busy answer named sent nothing (the blob took %s)", time.Since(start).Round(time.Millisecond))
	}
}

// pieceContent returns a maker of test peers' content: the blob and its map in pieces of piece.
func pieceContent(t *testing.T, data []byte, d digest.Digest, piece int64) func() *transfer.MemoryContent {
	t.Helper()
	bld, err := chunks.NewBuilder(digest.SHA256, piece)
	if err != nil {
		t.Fatal(err)
	}
	bld.Write(data)
	m := bld.Map()
	return func() *transfer.MemoryContent {
		mc := transfer.NewMemoryContent()
		mc.Put(d, "", data)
		mc.PutMap(m)
		return mc
	}
}

// getBytes counts the chunk bytes a test peer sent (not its map answers).
type getBytes struct{ n atomic.Int64 }

func (g *getBytes) Served(op string, _ int, bytes int64) {
	if op == "get" {
		g.n.Add(bytes)
	}
}

// A seed that declines a later piece because it sent it to another peer moments ago names that
// peer, and a node that knows no other holder of the piece takes it from the named one, although
// no provider record names it and the node already holds pieces of the blob. Before, only the
// first piece's busy answers were heeded, and the node waited out the seed's hold (15 s) for
// each such piece: in a rollout from one seed, the last pieces trailed the rest by up to two
// holds. The seed (authorized, super-seeding) and the holder are real libp2p peers speaking the
// real protocol; the holder counts what it serves.
func TestSeedsBusyAnswerNamesTheHolderOfALaterPiece(t *testing.T) {
	const piece = 1 << 20 // startTrusting's piece and chunk size
	o := startOrigin(t)
	data, d := randomBlob(t, 8*piece)
	pushBlob(t, o, "test/seedhint", data, d)
	content := pieceContent(t, data, d, piece)
	boot := startPeer(t, t.TempDir(), nil, o.URL())
	seed := startTestPeerConfig(t, p2p.Config{Bootstrap: boot.Node().Addrs(), Seed: true, SeedAuthorityKey: seedAuthority,
		SeedAuthorities: trusted()}, content(), nil, transfer.WithSuperSeeding(piece, piece, func(digest.Digest) bool { return true }))
	if err := seed.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	// The holder announces nothing: only the seed's answer can name it.
	var served getBytes
	holder := startObservedTestPeer(t, content(), &served, boot.Node().Addrs()...)
	if err := holder.Host().Connect(context.Background(), peer.AddrInfo{ID: seed.ID(), Addrs: seed.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	b := startTrusting(t, t.TempDir(), o.URL(), false, 0, seed.Addrs()...)
	waitFor(t, func() bool { return slices.Contains(b.Node().KnownSeeds(), seed.ID()) }, "the seed to be known")
	waitProvided(t, b, d.String())
	o.ResetCounts()

	// The holder takes the last piece from the seed, just before the node asks for the blob.
	takePiece(t, holder, seed.ID(), d, 7*piece, piece)
	pullFromHolder(t, o, b, "test/seedhint", data, d, &served)
}
