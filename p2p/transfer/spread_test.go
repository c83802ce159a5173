package transfer

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// The spreader sends a chunk to one swarm requester at a time, within the upload slots, and
// once the chunk went out whole declines it to other peers for a while; the peer it went to may
// ask again (it lost it).
func TestSpreader(t *testing.T) {
	s := &spreader{slots: 2}
	d := digest.FromString("blob")
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	if !s.admit(d, 0, 10, a) {
		t.Fatal("first request declined")
	}
	if s.admit(d, 0, 10, b) {
		t.Fatal("a chunk being sent was admitted twice")
	}
	if !s.admit(d, 10, 10, b) {
		t.Fatal("another chunk declined with a slot free")
	}
	if s.admit(d, 20, 10, c) {
		t.Fatal("a third request admitted with two slots")
	}
	s.release(d, 10, 10, b, false) // cut short: no record
	if !s.admit(d, 10, 10, c) {
		t.Fatal("a chunk whose send failed is declined")
	}
	s.release(d, 10, 10, c, true)
	s.release(d, 0, 10, a, true)
	if s.admit(d, 0, 10, b) {
		t.Fatal("a chunk just sent whole was admitted to another peer")
	}
	if !s.admit(d, 0, 10, a) {
		t.Fatal("the peer a chunk went to cannot ask for it again")
	}
	s.release(d, 0, 10, a, false)
	if s.total != 0 || len(s.sending) != 0 {
		t.Fatalf("slots leaked: total %d, sending %v", s.total, s.sending)
	}
}
