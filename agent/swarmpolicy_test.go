package agent_test

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// busyContent is a provider of one blob that answers every chunk request busy while it is still
// "receiving" the blob, as an overloaded provider in a large rollout does. Every step it holds
// one more chunk and tells the peers watching it, unless it is stuck (a dead swarm); once it
// holds every chunk it serves them.
type busyContent struct {
	*transfer.MemoryContent
	d digest.Digest

	mu      sync.Mutex
	have    *chunks.Set
	changed chan struct{}
	gone    bool // the test ended: nothing in progress (a map request waiting returns)
	liar    bool // answers busy even once it holds every chunk
}

func newBusyContent(t *testing.T, data []byte, d digest.Digest, start int, step time.Duration, stuck bool) *busyContent {
	bld, err := chunks.NewBuilder(digest.SHA256, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	bld.Write(data)
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", data)
	mc.PutMap(bld.Map())
	b := &busyContent{MemoryContent: mc, d: d, have: chunks.NewSet(chunks.Count(int64(len(data)), 1<<20)), changed: make(chan struct{})}
	for i := range start {
		b.have.Add(i)
	}
	t.Cleanup(func() { // after the peer's host is closed (cleanups run last first)
		b.mu.Lock()
		defer b.mu.Unlock()
		b.gone = true
		close(b.changed)
	})
	if stuck {
		return b
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(step)
		defer tick.Stop()
		for !b.full() {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
			b.mu.Lock()
			if b.gone {
				b.mu.Unlock()
				return
			}
			b.have.Add(b.have.Count())
			close(b.changed)
			b.changed = make(chan struct{})
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

func (b *busyContent) full() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.have.Full()
}

func (b *busyContent) Holding(d digest.Digest, chunkSize int64) (*chunks.Set, <-chan struct{}, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d != b.d || chunkSize != 1<<20 || b.gone {
		return nil, nil, false
	}
	return b.have.Clone(), b.changed, true
}

func (b *busyContent) Authorize(_ context.Context, a transfer.Access) error {
	if a.Op == "get" && (b.liar || !b.full()) {
		return errdefs.ErrTooManyRequests
	}
	return nil
}

// A swarm that is slow (its provider answers busy for longer than the stall bound, but keeps
// gaining chunks) is waited for: the node takes the blob from it and the origin sends nothing. A
// dead one (the provider answers, but gains nothing) still falls back to the origin at the stall
// bound. The origin is a real registry that counts its blob GETs.
func TestSlowSwarmIsNotADeadOne(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stuck bool
	}{
		{name: "slow swarm, no origin", stuck: false},
		{name: "dead swarm, origin", stuck: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startOrigin(t)
			data, d := randomBlob(t, 16<<20)
			pushBlob(t, o, "test/big", data, d)
			seed := startPeer(t, t.TempDir(), nil, o.URL())
			// 16 chunks, one more every 300 ms, from 2: about 4 s of busy answers, twice the
			// stall bound, each gain well within it.
			content := newBusyContent(t, data, d, 2, 300*time.Millisecond, tc.stuck)
			prov := startTestPeer(t, content, seed.Node().Addrs()...)
			if err := prov.Provide(context.Background(), d); err != nil {
				t.Fatal(err)
			}
			b := startAgentConfig(t, agent.Config{
				DataDir:      t.TempDir(),
				Registries:   []string{o.URL()},
				P2P:          &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: seed.Node().Addrs()},
				ChunkSize:    1 << 20,
				PieceSize:    1 << 20,
				PeerDeadline: agent.PeerDeadline{Stall: 2 * time.Second},
			})
			waitProvided(t, b, d.String())
			o.ResetCounts()
			body, err := getBlob(t, b.host, "test/big", d)
			if err != nil || !bytes.Equal(body, data) {
				t.Fatalf("pull: %v", err)
			}
			gets := o.BlobGets(d.String())
			fromPeer := counter(t, b.Gatherer(), "shoal_fetched_bytes_total", "peer")
			switch {
			case !tc.stuck && (gets != 0 || fromPeer != float64(len(data))):
				t.Errorf("slow swarm: %d origin GETs, %v bytes from the peer; want none from the origin, all %d from the peer", gets, fromPeer, len(data))
			case tc.stuck && gets == 0:
				t.Errorf("dead swarm: no origin GET; want the origin to resume")
			}
		})
	}
}

// A lying peer claims every chunk of a blob and answers every request for one busy, forever. A
// requester asks a seed only for chunks no other provider holds, which would make the liar keep
// it from the seed that holds the blob: after a few refusals of a chunk, the seed is asked after
// all, and the blob comes from it with nothing from the origin.
func TestBusyLiarCannotKeepTheSeedAway(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 8<<20)
	pushBlob(t, o, "test/big", data, d)
	seed := startTrusting(t, t.TempDir(), o.URL(), true, 0)
	if body, err := getBlob(t, seed.host, "test/big", d); err != nil || !bytes.Equal(body, data) {
		t.Fatalf("seed pull: %v", err)
	}
	liar := newBusyContent(t, data, d, 8, 0, true)
	liar.liar = true
	ln := startTestPeer(t, liar, seed.Node().Addrs()...)
	if err := ln.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	b := startAgentConfig(t, agent.Config{
		DataDir:    t.TempDir(),
		Registries: []string{o.URL()},
		P2P: &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: seed.Node().Addrs(),
			SeedAuthorities: trusted()},
		ChunkSize: 1 << 20, PieceSize: 1 << 20,
		// Long enough for the few refusals (a second apart) after which the seed is asked.
		PeerDeadline: agent.PeerDeadline{Stall: 10 * time.Second},
	})
	waitFor(t, func() bool { return slices.Contains(b.Node().KnownSeeds(), seed.Node().ID()) }, "the seed to be known")
	waitFor(t, func() bool {
		ps, _ := b.Node().FindProviders(context.Background(), d)
		return len(ps) == 2
	}, "the seed and the liar to provide the blob")
	o.ResetCounts()
	body, err := getBlob(t, b.host, "test/big", d)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("pull: %v", err)
	}
	if gets := o.BlobGets(d.String()); gets != 0 {
		t.Errorf("%d origin GETs: the liar kept the node from the seed until its swarm gave up", gets)
	}
}
