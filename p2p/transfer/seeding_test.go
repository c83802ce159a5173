package transfer

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-oci/shoal/internal/throttle"
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

// A provider declining a chunk names where to take it: the peer it is sending that range to
// (spreadFanout), or, as an original holder, the peer it sent the piece to within the hold, to
// every later requester (the receiver itself included: a swarm skips its own ID).
func TestBusyAnswersNameHolders(t *testing.T) {
	mc := NewMemoryContent()
	data := randomBytes(t, 48<<20) // a range bigger than the stream's window: a reader that
	d := digest.FromBytes(data)    // does not read holds its copy open
	mc.Put(d, "", data)
	seeded := randomBytes(t, 2<<20)
	sd := digest.FromBytes(seeded)
	mc.Put(sd, "", seeded)
	server := newHost(t)
	NewServer(server, mc, nil, nil, WithUploadSlots(8), WithSuperSeeding(1<<20, 1<<20, func(x digest.Digest) bool { return x == sd }))
	clients, ids := clientsOf(t, server, 3)
	p := server.ID()
	holdersOf := func(err error) []peer.ID {
		var cb *ChunkBusyError
		if !errors.As(err, &cb) {
			t.Fatalf("%v; want a busy answer naming holders (*ChunkBusyError)", err)
		}
		return cb.Holders
	}

	// Being sent: client 0 asks for 32 MiB and reads none of it.
	r0, err := clients[0].GetChunk(context.Background(), p, d, 1<<20, 32<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = clients[1].GetChunk(context.Background(), p, d, 1<<20, 32<<20, false)
	if hs := holdersOf(err); len(hs) != 1 || hs[0] != ids[0] {
		t.Errorf("range being sent: busy answer names %v, want [%s]", hs, ids[0])
	}
	r0.Close()

	// Sent within the hold, by an original holder.
	get := func(c *Client) error {
		r, err := c.GetChunk(context.Background(), p, sd, 0, 1<<20, false)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = io.Copy(io.Discard, r)
		return err
	}
	if err := get(clients[1]); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients[1:] {
		if hs := holdersOf(get(c)); len(hs) != 1 || hs[0] != ids[1] {
			t.Errorf("piece sent: busy answer names %v, want [%s]", hs, ids[1])
		}
	}
}

// The peers a busy answer names are only a hint from one peer: what is not a peer ID, the
// provider itself and repeats are dropped, and at most maxHolders are taken, whatever it sends.
func TestBusyAnswerHoldersAreBounded(t *testing.T) {
	var ids []peer.ID
	for range maxHolders + 3 {
		ids = append(ids, newHost(t).ID())
	}
	from := ids[0]
	wire := []string{"not a peer", from.String(), ids[1].String(), ids[1].String(), ""}
	for _, p := range ids[2:] {
		wire = append(wire, p.String())
	}
	got := holders(wire, from)
	if want := ids[1 : 1+maxHolders]; !slices.Equal(got, want) {
		t.Fatalf("holders %v, want %v", got, want)
	}
	resp := &response{Status: statusBusy, ChunkBusy: true, Holders: []string{"junk"}}
	if err := statusError(resp, from); err != ErrChunkBusy {
		t.Fatalf("a busy answer naming no valid peer: %v, want ErrChunkBusy itself", err)
	}
}

// A blob's first bytes (a range at offset 0 of at most firstFanoutBytes) go to firstFanout
// requesters at once, and the next is told of all of them; a larger range at offset 0 goes to
// one at a time. The server sends at 256 KiB/s, so every copy is still going when the next
// request comes.
func TestFirstBytesGoToSeveralAtOnce(t *testing.T) {
	mc := NewMemoryContent()
	data := randomBytes(t, 8<<20)
	d := digest.FromBytes(data)
	mc.Put(d, "", data)
	server := newHost(t)
	NewServer(server, mc, nil, nil, WithUploadSlots(8), WithUploadLimit(throttle.New(256<<10)))
	clients, ids := clientsOf(t, server, firstFanout+1)
	p := server.ID()
	for i := range firstFanout {
		r, err := clients[i].GetChunk(context.Background(), p, d, 0, firstFanoutBytes, false)
		if err != nil {
			t.Fatalf("first bytes to requester %d of %d: %v", i+1, firstFanout, err)
		}
		defer r.Close()
	}
	_, err := clients[firstFanout].GetChunk(context.Background(), p, d, 0, firstFanoutBytes, false)
	var cb *ChunkBusyError
	if !errors.As(err, &cb) || !slices.Equal(cb.Holders, ids[:firstFanout]) {
		t.Fatalf("first bytes to one requester more: %v; want busy naming %v", err, ids[:firstFanout])
	}
	// A whole chunk at offset 0 is not the first bytes: one at a time.
	r, err := clients[0].GetChunk(context.Background(), p, d, 0, 4<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := clients[1].GetChunk(context.Background(), p, d, 0, 4<<20, false); !errors.As(err, &cb) {
		t.Fatalf("a second requester of a whole chunk at offset 0: %v, want busy", err)
	}
}

// clientsOf returns n clients, each on its own host connected to server, and their IDs.
func clientsOf(t *testing.T, server host.Host, n int) ([]*Client, []peer.ID) {
	t.Helper()
	clients, ids := make([]*Client, n), make([]peer.ID, n)
	for i := range clients {
		h := newHost(t)
		if err := h.Connect(context.Background(), peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
			t.Fatal(err)
		}
		clients[i], ids[i] = NewClient(h), h.ID()
	}
	return clients, ids
}

// While the upload link is spare, requests past the upload slots are admitted, one per
// extraSlotEvery and up to twice the slots; while it is not, they are answered busy as before.
// (A unit test of the admission: whether the link is spare is the throttle's, tested there.)
func TestExtraSlotsWhileTheLinkIsSpare(t *testing.T) {
	spare := false
	s := spreader{slots: 2, spare: func() bool { return spare }}
	d := digest.FromString("blob")
	now := time.Now()
	p := peer.ID("requester")
	admit := func(i int, at time.Time) bool {
		ok, chunk, _ := s.admit(d, int64(i)<<20, 1<<20, p, at)
		if chunk {
			t.Fatalf("range %d: chunk busy, want slot busy or admitted", i)
		}
		return ok
	}
	if !admit(0, now) || !admit(1, now) {
		t.Fatal("the two slots were not given")
	}
	if admit(2, now) {
		t.Fatal("a third request admitted while the link is not spare")
	}
	spare = true
	if !admit(2, now) {
		t.Fatal("a request past the slots refused while the link is spare")
	}
	if admit(3, now.Add(extraSlotEvery/2)) {
		t.Fatal("two extra slots opened within extraSlotEvery")
	}
	if !admit(3, now.Add(extraSlotEvery)) {
		t.Fatal("the second extra slot was not opened after extraSlotEvery")
	}
	if admit(4, now.Add(3*extraSlotEvery)) {
		t.Fatal("more than twice the slots")
	}
	s.release(d, 3<<20, 1<<20, p)
	spare = false
	if admit(3, now.Add(4*extraSlotEvery)) {
		t.Fatal("an extra slot reopened while the link is not spare")
	}
}
