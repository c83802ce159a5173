package providerquota

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// A peer holds at most perPeer live records: a re-provide refreshes one without counting twice,
// an expired one frees its place, and other peers keep their own quota until the total is reached.
func TestQuota(t *testing.T) {
	now := time.Unix(1000, 0)
	q := New(3, 5)
	q.now = func() time.Time { return now }
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	for i := range 3 {
		if !q.Admit(a, fmt.Appendf(nil, "k%d", i)) {
			t.Fatalf("record %d within the quota refused", i)
		}
	}
	if q.Admit(a, []byte("k3")) {
		t.Fatal("a record past the per-peer quota was admitted")
	}
	if !q.Admit(a, []byte("k0")) {
		t.Fatal("a re-provide of a live record was refused")
	}
	if !q.Admit(b, []byte("k0")) || !q.Admit(b, []byte("k1")) {
		t.Fatal("another peer paid for the first one's records")
	}
	if q.Admit(c, []byte("k0")) {
		t.Fatal("a record past the total was admitted")
	}
	if q.Held(a) != 3 || q.Refused() != 2 {
		t.Fatalf("held %d, refused %d", q.Held(a), q.Refused())
	}
	now = now.Add(Validity / 2)
	q.Admit(a, []byte("k1")) // refreshed: outlives k0 and k2
	now = now.Add(Validity/2 + time.Second)
	if q.Held(a) != 1 {
		t.Fatalf("%d live records after the others expired, want 1", q.Held(a))
	}
	if !q.Admit(a, []byte("k4")) || !q.Admit(a, []byte("k5")) {
		t.Fatal("expired records kept their places")
	}
	if !q.Admit(c, []byte("k0")) {
		t.Fatal("expired records kept their places in the total")
	}
}
