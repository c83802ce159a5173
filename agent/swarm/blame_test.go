package swarm

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/internal/chunks"
)

// Unit tests of the swarm's blame rules (swarmFetch.mismatch and settle): who is penalized when a
// chunk fails verification, depending on who vouched for the chunk's states.
func TestSwarmBlame(t *testing.T) {
	const (
		mapper peer.ID = "mapper" // gave the map's states
		second peer.ID = "second" // another provider, sender of the failing chunk
	)
	chunkErr := chunks.ErrMismatch
	newSwarm := func(confirmed bool) (*swarmFetch, *Client) {
		a := New(Deps{Log: slog.New(slog.DiscardHandler), Metrics: Metrics{
			Bytes:              prometheus.NewCounter(prometheus.CounterOpts{Name: "b"}),
			VerifyFailures:     prometheus.NewCounter(prometheus.CounterOpts{Name: "v"}),
			PeerVerifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pv"}, []string{"peer"}),
			Providers:          prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p"}),
		}})
		s := &swarmFetch{c: a, peers: map[peer.ID]*swarmPeer{}, suspect: map[int]peer.ID{}, judge: map[int]peer.ID{},
			jobs: map[int][]*chunkJob{}, used: map[peer.ID]int64{}, events: make(chan struct{}, 1)}
		s.m = &chunks.Map{Size: 4 << 20, ChunkSize: 1 << 20, States: make([][]byte, 4)}
		s.from = []peer.ID{mapper, mapper, mapper, mapper}
		s.conf = []bool{true, confirmed, confirmed, confirmed}
		s.have = chunks.NewSet(4)
		s.peer(mapper)
		s.peer(second)
		return s, a
	}
	t.Run("states confirmed by two providers: the sender is blamed", func(t *testing.T) {
		s, a := newSwarm(true)
		s.mismatch(s.peers[second], 1, chunkErr)
		if !a.penalties.Penalized(second) || a.penalties.Penalized(mapper) || s.fatal != nil {
			t.Fatal("want only the sender penalized")
		}
	})
	t.Run("the sender's own states: the sender is blamed", func(t *testing.T) {
		s, a := newSwarm(false)
		s.mismatch(s.peers[mapper], 1, chunkErr)
		if !a.penalties.Penalized(mapper) || s.fatal != nil {
			t.Fatal("want the map's provider penalized, the fetch going on")
		}
	})
	t.Run("unconfirmed states, another sender: a suspect, judged by the states' provider", func(t *testing.T) {
		s, a := newSwarm(false)
		s.mismatch(s.peers[second], 2, chunkErr)
		if a.penalties.Penalized(second) || s.suspect[2] != second || s.judge[2] != mapper {
			t.Fatalf("suspect %q judge %q", s.suspect[2], s.judge[2])
		}
		// The judge's own chunk verifies (settled without error): the suspect lied.
		s.judged(2, mapper)
		if !a.penalties.Penalized(second) || a.penalties.Penalized(mapper) {
			t.Fatal("want the suspect penalized after the judge's chunk verified")
		}
	})
	t.Run("the states' provider fails its own chunk after a suspect: a forged map, the fetch fails", func(t *testing.T) {
		s, a := newSwarm(false)
		s.mismatch(s.peers[second], 2, chunkErr)
		s.mismatch(s.peers[mapper], 2, chunkErr)
		if !a.penalties.Penalized(mapper) || a.penalties.Penalized(second) || !errors.Is(s.fatal, chunks.ErrMismatch) {
			t.Fatalf("penalized mapper %v second %v, fatal %v", a.penalties.Penalized(mapper), a.penalties.Penalized(second), s.fatal)
		}
	})
	t.Run("a judge that cannot be asked: the suspect goes unjudged", func(t *testing.T) {
		s, a := newSwarm(false)
		s.mismatch(s.peers[second], 2, chunkErr)
		s.peers[mapper].out = true
		s.start(t.Context(), nil, 2, fromHolders) // finds no provider, clears the judgement
		if _, ok := s.suspect[2]; ok || a.penalties.Penalized(second) {
			t.Fatal("want the suspect dropped without a penalty")
		}
	})
}
