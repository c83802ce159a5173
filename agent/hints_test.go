package agent_test

import (
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/chunks"
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
	bld, err := chunks.NewBuilder(digest.SHA256, chunks.DefaultPieceSize)
	if err != nil {
		t.Fatal(err)
	}
	bld.Write(data)
	content := func() *transfer.MemoryContent {
		mc := transfer.NewMemoryContent()
		mc.Put(d, "", data)
		mc.PutMap(bld.Map())
		return mc
	}
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
	start := time.Now()
	r, err := transfer.NewClient(holder.Host()).GetChunk(context.Background(), orig.Host().ID(), d, 0, chunks.DefaultPieceSize, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, r) // a copy counts as sent once received whole
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	body, err := getBlob(t, b.host, "test/hinted", d)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("GET the blob: %v (%d bytes)", err, len(body))
	}
	if gets := o.BlobGets(d.String()); gets != 0 {
		t.Errorf("the origin was asked for the blob %d times", gets)
	}
	if served.n.Load() == 0 {
		t.Fatalf("the holder the busy answer named sent no chunk (the blob took %s)", time.Since(start).Round(time.Millisecond))
	}
}

// getBytes counts the chunk bytes a test peer sent (not its map answers).
type getBytes struct{ n atomic.Int64 }

func (g *getBytes) Served(op string, _ int, bytes int64) {
	if op == "get" {
		g.n.Add(bytes)
	}
}
