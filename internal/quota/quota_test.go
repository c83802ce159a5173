package quota

import (
	"fmt"
	"testing"
	"time"
)

// Each key has its own bucket: Burst at once, then Rate a second; other keys are unaffected; at
// most maxKeys buckets are kept.
func TestPerKey(t *testing.T) {
	now := time.Unix(1000, 0)
	q := New(2, 3, 4).WithClock(func() time.Time { return now })
	for i := range 3 {
		if !q.Allow("a") {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	if q.Allow("a") {
		t.Fatal("a request past the burst allowed")
	}
	if !q.Allow("b") {
		t.Fatal("another key paid for the first")
	}
	now = now.Add(time.Second) // two more for a
	var got []bool
	for range 3 {
		got = append(got, q.Allow("a"))
	}
	if !got[0] || !got[1] || got[2] {
		t.Fatalf("after a second: %v, want two more allowed (a refill of 2 a second)", got)
	}
	for i := range 100 {
		q.Allow(fmt.Sprint(i))
	}
	if len(q.m) > 4 {
		t.Fatalf("%d buckets kept, want at most 4", len(q.m))
	}
}
