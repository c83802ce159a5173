package transfer

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// A super-seeding server sends each chunk of an original blob once (within the hold), answering
// busy about that chunk only, so that the requester asks it for other chunks at once; it still
// sends a blob of one chunk, and any blob it is not the original holder of, to every requester.
func TestSuperSeedingSendsEachChunkOnce(t *testing.T) {
	mc := NewMemoryContent()
	data := randomBytes(t, 3<<20+100) // four chunks of 1 MiB, the last short
	d := digest.FromBytes(data)
	mc.Put(d, "", data)
	other := randomBytes(t, 2<<20)
	od := digest.FromBytes(other)
	mc.Put(od, "", other)
	small := randomBytes(t, 1000)
	sd := digest.FromBytes(small)
	mc.Put(sd, "", small)

	server, client := newHost(t), newHost(t)
	NewServer(server, mc, nil, nil, WithSuperSeeding(1<<20, 1<<20, func(x digest.Digest) bool { return x != od }))
	if err := client.Connect(context.Background(), peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	c, p := NewClient(client), server.ID()
	get := func(d digest.Digest, off, n int64) error {
		r, err := c.GetChunk(context.Background(), p, d, off, n, true)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = io.Copy(io.Discard, r)
		return err
	}
	for _, tc := range []struct {
		name     string
		d        digest.Digest
		off, n   int64
		declined bool
	}{
		{"first copy of chunk 0", d, 0, 1 << 20, false},
		{"chunk 0 again", d, 0, 1 << 20, true},
		{"chunk 1", d, 1 << 20, 1 << 20, false},
		{"the short last chunk", d, 3 << 20, 1 << 20, false},
		{"the last chunk again", d, 3 << 20, 1 << 20, true},
		{"chunk 1 again", d, 1 << 20, 1 << 20, true},
		{"not a whole chunk", d, 100, 1 << 20, false},
		{"not a whole chunk again", d, 100, 1 << 20, false},
		{"a blob it is not the original of", od, 0, 1 << 20, false},
		{"the same again", od, 0, 1 << 20, false},
		{"a blob of one chunk", sd, 0, 1 << 20, false},
		{"the same again", sd, 0, 1 << 20, false},
	} {
		err := get(tc.d, tc.off, tc.n)
		switch {
		case tc.declined && !errors.Is(err, ErrChunkBusy):
			t.Errorf("%s: %v; want it declined as a chunk sent already (ErrChunkBusy)", tc.name, err)
		case !tc.declined && err != nil:
			t.Errorf("%s: %v; want it sent", tc.name, err)
		}
	}
}

// Super-seeding counts pieces: a requester waiting for its first byte asks for piece 0 alone and
// then for the rest of the chunk; a second requester of the whole chunk is declined (its first
// piece went out already) and takes it from the first, which asks the server for the rest.
func TestSuperSeedingCountsPieces(t *testing.T) {
	mc := NewMemoryContent()
	data := randomBytes(t, 2<<20) // two chunks of 1 MiB, eight pieces of 256 KiB
	d := digest.FromBytes(data)
	mc.Put(d, "", data)
	server, client := newHost(t), newHost(t)
	NewServer(server, mc, nil, nil, WithSuperSeeding(256<<10, 1<<20, func(digest.Digest) bool { return true }))
	if err := client.Connect(context.Background(), peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	c, p := NewClient(client), server.ID()
	for _, tc := range []struct {
		name     string
		off, n   int64
		declined bool
	}{
		{"piece 0 alone", 0, 256 << 10, false},
		{"chunk 0 whole: its first piece went out", 0, 1 << 20, true},
		{"the rest of chunk 0", 256 << 10, 768 << 10, false},
		{"the rest of chunk 0 again", 256 << 10, 768 << 10, true},
		{"piece 2 alone: sent within the hold", 512 << 10, 256 << 10, true},
		{"chunk 1 whole", 1 << 20, 1 << 20, false},
		{"piece 5 alone: sent with chunk 1", 5 << 18, 256 << 10, true},
	} {
		r, err := c.GetChunk(context.Background(), p, d, tc.off, tc.n, true)
		if err == nil {
			_, err = io.Copy(io.Discard, r)
			r.Close()
		}
		switch {
		case tc.declined && !errors.Is(err, ErrChunkBusy):
			t.Errorf("%s: %v; want it declined (ErrChunkBusy)", tc.name, err)
		case !tc.declined && err != nil:
			t.Errorf("%s: %v; want it sent", tc.name, err)
		}
	}
}
