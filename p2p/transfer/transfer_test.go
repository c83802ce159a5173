package transfer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/tags"
)

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func pair(t *testing.T, content Content) (*Client, peer.ID, host.Host) {
	t.Helper()
	server, client := newHost(t), newHost(t)
	NewServer(server, content, nil, nil)
	if err := client.Connect(context.Background(), peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return NewClient(client), server.ID(), server
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestGetRangesAndMaps(t *testing.T) {
	mc := NewMemoryContent()
	data := randomBytes(t, 3<<20+17)
	d := digest.FromBytes(data)
	mc.Put(d, "", data)
	manifest := []byte(`{"schemaVersion":2}`)
	md := digest.FromBytes(manifest)
	mc.Put(md, "application/vnd.oci.image.manifest.v1+json", manifest)
	c, p, _ := pair(t, mc)
	ctx := context.Background()

	for _, tc := range []struct {
		name   string
		off, n int64
	}{
		{"whole", 0, -1},
		{"middle", 1000, 70000},
		{"tail", int64(len(data)) - 5, -1},
		{"empty at end", int64(len(data)), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.Get(ctx, p, d, tc.off, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			end := int64(len(data))
			if tc.n >= 0 {
				end = tc.off + tc.n
			}
			if !bytes.Equal(got, data[tc.off:end]) || r.Size != int64(len(data)) {
				t.Fatalf("got %d bytes (size %d)", len(got), r.Size)
			}
		})
	}

	r, err := c.Get(ctx, p, md, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, manifest) || r.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("manifest: %q %q", got, r.MediaType)
	}

	m, err := c.Map(ctx, p, d, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != 4 {
		t.Fatalf("map of %d chunks", m.Len())
	}
	for i := 0; i < m.Len(); i++ {
		off, n := m.Range(i)
		if err := m.Verify(i, data[off:off+n]); err != nil {
			t.Fatal(err)
		}
	}

	mc.PutTag("r", "repo", "v1", tags.Record{Digest: md, MediaType: "application/vnd.oci.image.manifest.v1+json", Resolved: time.Unix(100, 0)})
	recs, err := c.Tags(ctx, p, "r", "repo", "v1")
	if err != nil || len(recs) != 1 || recs[0].Digest != md {
		t.Fatalf("tags: %v %v", recs, err)
	}
}

func TestErrors(t *testing.T) {
	mc := NewMemoryContent()
	data := randomBytes(t, 1000)
	d := digest.FromBytes(data)
	mc.Put(d, "", data)
	c, p, _ := pair(t, mc)
	ctx := context.Background()
	missing := digest.FromString("nope")
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"unknown blob", func() error { _, err := c.Get(ctx, p, missing, 0, -1); return err }, errdefs.ErrNotFound},
		{"range past end", func() error { _, err := c.Get(ctx, p, d, 900, 200); return err }, errdefs.ErrInvalid},
		{"negative offset", func() error { _, err := c.Get(ctx, p, d, -1, 10); return err }, errdefs.ErrInvalid},
		{"bad digest", func() error { _, err := c.Get(ctx, p, digest.Digest("sha256:zz"), 0, -1); return err }, errdefs.ErrInvalid},
		{"bad chunk size", func() error { _, err := c.Map(ctx, p, d, 1000); return err }, errdefs.ErrInvalid},
		{"map of unknown", func() error { _, err := c.Map(ctx, p, missing, 1<<20); return err }, errdefs.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// A server that dies mid-body leaves the client with an error, never a short body read as EOF.
func TestServerGoneMidTransfer(t *testing.T) {
	mc := NewMemoryContent()
	data := randomBytes(t, 32<<20)
	d := digest.FromBytes(data)
	mc.Put(d, "", data)
	c, p, server := pair(t, mc)
	r, err := c.Get(context.Background(), p, d, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 1<<20)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	server.Close()
	_, err = io.Copy(io.Discard, r)
	if err == nil || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("after the server closed: %v", err)
	}
}

// Garbage requests are refused without harming the server.
func TestMalformedRequests(t *testing.T) {
	mc := NewMemoryContent()
	data := []byte("hello")
	d := digest.FromBytes(data)
	mc.Put(d, "", data)
	server, client := newHost(t), newHost(t)
	NewServer(server, mc, nil, nil)
	ctx := context.Background()
	if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	for _, raw := range [][]byte{
		{0xff, 0xff, 0xff, 0xff, 0x0f},        // frame length far over the limit
		append([]byte{5}, []byte("nojso")...), // not JSON
		{},                                    // nothing
	} {
		st, err := client.NewStream(ctx, server.ID(), ProtocolID)
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(5 * time.Second))
		st.Write(raw)
		st.CloseWrite()
		io.Copy(io.Discard, st)
		st.Close()
	}
	// The server still answers properly.
	r, err := NewClient(client).Get(ctx, server.ID(), d, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	if string(got) != "hello" {
		t.Fatalf("got %q", got)
	}
}

// GetChunk with upTo learns a blob's size and first bytes in one round trip, whatever the blob's size.
func TestGetChunkUpTo(t *testing.T) {
	mc := NewMemoryContent()
	small, big := randomBytes(t, 1000), randomBytes(t, 5000)
	ds, db := digest.FromBytes(small), digest.FromBytes(big)
	mc.Put(ds, "", small)
	mc.Put(db, "", big)
	c, p, _ := pair(t, mc)
	for _, tc := range []struct {
		d    digest.Digest
		want []byte
	}{{ds, small}, {db, big[:4096]}} {
		r, err := c.GetChunk(context.Background(), p, tc.d, 0, 4096, true)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, tc.want) || r.Length != int64(len(tc.want)) {
			t.Fatalf("%s: %d bytes, %v", tc.d, len(got), err)
		}
	}
}

// mapBytes passes on the body bytes of each map answer, once the server is done with it.
type mapBytes chan int64

func (m mapBytes) Served(op string, _ int, bytes int64) {
	if op == opMap {
		m <- bytes
	}
}

func (m mapBytes) next(t *testing.T) int64 {
	t.Helper()
	select {
	case n := <-m:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no map answer observed")
		return 0
	}
}

// A watcher that has a provider's complete map gets its holdings without the map again; a
// watcher without one, with a partial one, or with a complete one that is not the provider's,
// gets the provider's map.
func TestWatchOmitsAKnownCompleteMap(t *testing.T) {
	mc := NewMemoryContent()
	data := randomBytes(t, 5<<20+3)
	d := digest.FromBytes(data)
	mc.Put(d, "", data)
	server, client := newHost(t), newHost(t)
	served := make(mapBytes, 4)
	NewServer(server, mc, nil, served)
	if err := client.Connect(context.Background(), peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	c, p := NewClient(client), server.ID()
	ctx := context.Background()
	h, err := c.Watch(ctx, p, d, 1<<20, Want{})
	if err != nil {
		t.Fatal(err)
	}
	if n := served.next(t); !h.Map.Complete() || n == 0 {
		t.Fatalf("first answer: complete map %v, %d body bytes", h.Map.Complete(), n)
	}
	again, err := c.Watch(ctx, p, d, 1<<20, Want{Known: h.Map})
	if err != nil {
		t.Fatal(err)
	}
	if n := served.next(t); again.Map != h.Map || !again.Have.Full() || n != 0 {
		t.Fatalf("with the map known: same map %v, holds all %v, %d body bytes (want 0)", again.Map == h.Map, again.Have.Full(), n)
	}
	partial := &chunks.Map{Digest: h.Map.Digest, Size: h.Map.Size, ChunkSize: h.Map.ChunkSize, States: h.Map.States[:2]}
	third, err := c.Watch(ctx, p, d, 1<<20, Want{Known: partial})
	if err != nil {
		t.Fatal(err)
	}
	if n := served.next(t); !third.Map.Complete() || n == 0 {
		t.Fatalf("with a partial map known: complete map %v, %d body bytes", third.Map.Complete(), n)
	}
	// A complete map that is not the provider's (a forged one the requester took from someone
	// else): the provider sends its own, and the requester sees them disagree.
	other := &chunks.Map{Digest: h.Map.Digest, Size: h.Map.Size, ChunkSize: h.Map.ChunkSize, States: slices.Clone(h.Map.States)}
	other.States[3] = bytes.Clone(other.States[3])
	other.States[3][len(other.States[3])-1] ^= 1
	fourth, err := c.Watch(ctx, p, d, 1<<20, Want{Known: other})
	if err != nil {
		t.Fatal(err)
	}
	if n := served.next(t); fourth.Map == other || n == 0 || !bytes.Equal(fourth.Map.States[3], h.Map.States[3]) {
		t.Fatalf("with another complete map known: the provider's own map sent %v, %d body bytes", fourth.Map != other, n)
	}
}

// A provider that omits a map the requester did not say it has is refused, not trusted for
// one: the requester has no map to take its place.
func TestUnaskedOmittedMapIsRefused(t *testing.T) {
	liar, client := newHost(t), newHost(t)
	liar.SetStreamHandler(ProtocolID, func(st network.Stream) {
		defer st.Close()
		var req request
		if err := readFrame(bufio.NewReader(st), maxRequestFrame, &req); err != nil {
			_ = st.Reset()
			return
		}
		_ = writeFrame(st, response{Status: statusOK, Size: 5 << 20, MapOmitted: true})
	})
	if err := client.Connect(context.Background(), peer.AddrInfo{ID: liar.ID(), Addrs: liar.Addrs()}); err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("blob")
	_, err := NewClient(client).Watch(context.Background(), liar.ID(), d, 1<<20, Want{})
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("an omitted map nobody asked to omit: %v, want ErrInvalid", err)
	}
}
