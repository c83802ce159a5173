package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// Pieces: a chunk (the unit a swarm asks for, 4 MiB by default) is verified and passed on piece
// by piece (512 KiB by default), to the local client and to other peers, before the rest of the
// chunk has arrived.

// gatedContent serves a blob honestly to its first `opens` chunk requests (the first node's)
// and to nobody else, and holds back every byte past `after` until the gate opens: a provider
// whose uplink delivers the start of a chunk and then nothing for a while.
type gatedContent struct {
	*transfer.MemoryContent
	after int64
	gate  chan struct{}
	opens atomic.Int32
	max   int32
}

func (g *gatedContent) OpenContent(d digest.Digest) (transfer.Blob, error) {
	if g.opens.Add(1) > g.max {
		return nil, fmt.Errorf("serving only the first node: %w", errdefs.ErrNotFound)
	}
	b, err := g.MemoryContent.OpenContent(d)
	if err != nil {
		return nil, err
	}
	return &gatedBlob{Blob: b, g: g}, nil
}

type gatedBlob struct {
	transfer.Blob
	g *gatedContent
}

func (b *gatedBlob) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > b.g.after {
		<-b.g.gate
	}
	return b.Blob.ReadAt(p, off)
}

// connect connects a test peer to an agent's libp2p host.
func connect(t *testing.T, from *p2p.Node, to *node) {
	t.Helper()
	var addrs []multiaddr.Multiaddr
	for _, s := range to.Node().Addrs() {
		ma, _ := multiaddr.NewMultiaddr(s)
		if pi, err := peer.AddrInfoFromP2pAddr(ma); err == nil {
			addrs = append(addrs, pi.Addrs...)
		}
	}
	if err := from.Host().Connect(context.Background(), peer.AddrInfo{ID: to.Node().ID(), Addrs: addrs}); err != nil {
		t.Fatal(err)
	}
}

// streamBlob GETs a blob from an agent and counts the body bytes as they arrive; the result
// channel gets the whole body once it ends.
func streamBlob(t *testing.T, host, repo string, d digest.Digest, got *atomic.Int64) <-chan []byte {
	t.Helper()
	out := make(chan []byte, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(out)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/"+repo+"/blobs/"+d.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return
		}
		var body bytes.Buffer
		buf := make([]byte, 64<<10)
		for {
			n, err := resp.Body.Read(buf)
			body.Write(buf[:n])
			got.Add(int64(n))
			if err != nil {
				if errors.Is(err, io.EOF) {
					out <- body.Bytes()
				}
				return
			}
		}
	}()
	return out
}

// TestPiecesReachClientAndNextPeerBeforeTheChunk: a provider sends the first 2 MiB of a chunk
// (its first pieces) and then holds back the rest. The node receiving it passes those pieces to its local
// client and, cut-through, to a second node (whose only way to them is the first node) while the
// chunk is still incomplete. Then the rest comes, and both get the whole blob, verified.
func TestPiecesReachClientAndNextPeerBeforeTheChunk(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 6<<20) // chunks of 4 and 2 MiB, in pieces of 512 KiB
	pushBlob(t, o, "test/big", data, d)
	const held = 2 << 20 // the provider sends the first 2 MiB, then waits
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", data)
	// The first node asks for the first piece alone and chunk 1 at once (the two chunks after its
	// prefix), then for the rest of chunk 0, and gets those three opens; the second node is
	// refused, so its only source of the pieces is the first node.
	src := &gatedContent{MemoryContent: mc, after: held, gate: make(chan struct{}), max: 3}
	var once sync.Once
	open := func() { once.Do(func() { close(src.gate) }) }
	t.Cleanup(open)
	boot := startPeer(t, t.TempDir(), nil, o.URL())
	provider := startTestPeer(t, src, boot.Node().Addrs()...)
	if err := provider.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	start := func() *node {
		return startAgentConfig(t, agent.Config{DataDir: t.TempDir(), Registries: []string{o.URL()},
			P2P: &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: boot.Node().Addrs()}})
	}
	a := start()
	waitProvided(t, a, d.String())

	var gotA atomic.Int64
	bodyA := streamBlob(t, a.host, "test/big", d, &gotA)
	waitFor(t, func() bool { return gotA.Load() >= held }, "the first node's client to get the pieces sent")
	if n := counter(t, a.Gatherer(), "shoal_fetched_bytes_total", "peer"); n != held {
		t.Fatalf("the first node landed %v bytes from peers while the provider had sent %d", n, held)
	}

	// The second node finds the first one (it provides the blob from its first piece).
	b := start()
	waitFor(t, func() bool {
		ps, _ := b.Node().FindProviders(context.Background(), d)
		for _, p := range ps {
			if p.ID == a.Node().ID() {
				return true
			}
		}
		return false
	}, "the first node to provide the blob")
	var gotB atomic.Int64
	bodyB := streamBlob(t, b.host, "test/big", d, &gotB)
	waitFor(t, func() bool { return gotB.Load() >= held }, "the second node's client to get the pieces through the first node")
	// Still nothing past the held pieces anywhere: the chunk is incomplete at both nodes.
	if n := counter(t, a.Gatherer(), "shoal_fetched_bytes_total", "peer"); n != held {
		t.Fatalf("the first node has %v bytes from peers, want %d", n, held)
	}
	if n := gotA.Load(); n != held {
		t.Fatalf("the first node's client got %d bytes, want %d", n, held)
	}

	open()
	for name, body := range map[string]<-chan []byte{"first": bodyA, "second": bodyB} {
		if got := <-body; !bytes.Equal(got, data) {
			t.Fatalf("the %s node's client got %d bytes, not the blob", name, len(got))
		}
	}
	if n := counter(t, b.Gatherer(), "shoal_fetched_bytes_total", "origin"); n != 0 {
		t.Fatalf("the second node took %v bytes from the origin", n)
	}
	if n := o.Count(http.MethodGet, "/v2/test/big/blobs/"+d.String()); n != 0 {
		t.Fatalf("the origin served the blob %d times", n)
	}
}

// TestLyingPieceIsBlamed: a peer with the honest map sends a chunk with a corrupt piece at 2 MiB.
// The pieces before it land (verified) and the liar is blamed for that one; the rest comes
// from the origin, and only the right bytes are stored.
func TestLyingPieceIsBlamed(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 4<<20+1024) // chunk 0: 4 MiB; chunk 1: 1 KiB
	pushBlob(t, o, "test/big", data, d)
	honest, err := chunks.Read(context.Background(), bytes.NewReader(data), digest.SHA256, chunks.DefaultPieceSize)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(data)
	bad[2<<20+100] ^= 0x55 // in the piece starting at 2 MiB
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", bad)
	mc.PutMap(honest)
	boot := startPeer(t, t.TempDir(), nil, o.URL())
	var liarSent servedBytes
	liar := startObservedTestPeer(t, mc, &liarSent, boot.Node().Addrs()...)
	if err := liar.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	b := startAgentConfig(t, agent.Config{DataDir: t.TempDir(), Registries: []string{o.URL()},
		P2P: &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: boot.Node().Addrs()}})
	waitProvided(t, b, d.String())

	body, err := getBlob(t, b.host, "test/big", d)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("pull with a lying peer: %v", err)
	}
	if v := counter(t, b.Gatherer(), "shoal_verification_failures_total", "peer"); v != 1 {
		t.Fatalf("peer verification failures = %v, want 1", v)
	}
	// Pieces 0 and 1 came from the liar, verified, before its bad piece; piece 4 may have too.
	if v := counter(t, b.Gatherer(), "shoal_fetched_bytes_total", "peer"); v != 2<<20 && v != 2<<20+1024 {
		t.Fatalf("%v verified bytes from the liar, want the two pieces before the bad one", v)
	}
	path := filepath.Join(b.dir, "blobs", "sha256", d.Encoded())
	waitFor(t, func() bool { _, err := os.Stat(path); return err == nil }, "the blob to be committed")
	if stored, err := os.ReadFile(path); err != nil || !bytes.Equal(stored, data) {
		t.Fatalf("stored content wrong: %v", err)
	}
	// The liar is in the penalty box: the next blob it provides is not taken from it.
	data2, d2 := randomBlob(t, 2<<20)
	pushBlob(t, o, "test/big", data2, d2)
	mc.Put(d2, "", data2)
	if err := liar.Provide(context.Background(), d2); err != nil {
		t.Fatal(err)
	}
	waitProvided(t, b, d2.String())
	sentBefore := liarSent.n.Load()
	if body, err := getBlob(t, b.host, "test/big", d2); err != nil || !bytes.Equal(body, data2) {
		t.Fatal(err)
	}
	if sent := liarSent.n.Load() - sentBefore; sent != 0 {
		t.Fatalf("fetched %d bytes from the blamed peer again", sent)
	}
}

// TestCutThroughFromAnOriginStream: a node fetching a blob in order from its origin says, in its
// map answers, which pieces it is receiving, and serves a chunk request for pieces that have not
// arrived yet (no busy answer), sending them as they come: the first node pulling through a
// coordinator follows the coordinator's origin stream.
func TestCutThroughFromAnOriginStream(t *testing.T) {
	data, d := randomBlob(t, 6<<20)
	const part = 1<<20 + 12345 // the origin sends this much, then waits
	o := startPausedOrigin(t, d, data, part)
	co := startAgentConfig(t, agent.Config{DataDir: t.TempDir(), Registries: []string{o.URL},
		P2P: &p2p.Config{ListenAddrs: []string{loopback}}, PieceSize: 1 << 20})
	var got atomic.Int64
	body := streamBlob(t, co.host, "test/slow", d, &got)
	waitFor(t, func() bool { return got.Load() >= part-1 }, "the node's client to get what the origin sent")

	probe := startTestPeer(t, transfer.NewMemoryContent(), co.Node().Addrs()...)
	connect(t, probe, co)
	c := transfer.NewClient(probe.Host())
	h, err := c.Watch(context.Background(), co.Node().ID(), d, 1<<20, transfer.Want{})
	if err != nil {
		t.Fatal(err)
	}
	if !h.Have.Has(0) || h.Have.Has(1) || !h.Recv.Has(1) || !h.Recv.Has(2) || h.Map.Len() != 2 {
		t.Fatalf("holds %d pieces, receives %d, map of %d states; want piece 0 held, 1 and 2 received, 2 states",
			h.Have.Count(), h.Recv.Count(), h.Map.Len())
	}
	rng, err := c.GetChunk(context.Background(), co.Node().ID(), d, 1<<20, 2<<20, false)
	if err != nil {
		t.Fatalf("asking for pieces the node is receiving: %v", err)
	}
	defer rng.Close()
	cut := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(rng); cut <- b }()
	// Pieces past its window are not offered: such a request is answered busy at once.
	if _, err := c.GetChunk(context.Background(), co.Node().ID(), d, 5<<20, 1<<20, false); !errors.Is(err, transfer.ErrBusy) {
		t.Fatalf("a request for bytes far past the stream: %v, want busy", err)
	}
	o.release()
	if b := <-cut; !bytes.Equal(b, data[1<<20:3<<20]) {
		t.Fatalf("cut-through: got %d bytes, not pieces 1 and 2", len(b))
	}
	if b := <-body; !bytes.Equal(b, data) {
		t.Fatalf("the client got %d bytes, not the blob", len(b))
	}
}
