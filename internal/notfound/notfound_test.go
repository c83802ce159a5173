package notfound

import (
	"fmt"
	"testing"
	"time"
)

// A key is remembered for the TTL and no longer; at most Max keys are, the oldest forgotten first.
func TestCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := New(10*time.Second, 3).WithClock(func() time.Time { return now })
	c.Add("a")
	if !c.Has("a") || c.Has("b") {
		t.Fatal("a not remembered, or b invented")
	}
	now = now.Add(9 * time.Second)
	c.Add("b")
	if !c.Has("a") {
		t.Fatal("a forgotten within its TTL")
	}
	now = now.Add(time.Second)
	if c.Has("a") || !c.Has("b") {
		t.Fatal("a outlived its TTL, or b did not live its own")
	}
	c.Add("b") // again: remembered from now
	now = now.Add(9 * time.Second)
	if !c.Has("b") {
		t.Fatal("a key added again was not remembered anew")
	}
	for i := range 10 {
		c.Add(fmt.Sprint(i))
	}
	if c.Len() != 3 || !c.Has("9") || c.Has("6") || c.Has("b") {
		t.Fatalf("bounded to 3 keys, newest kept: len %d", c.Len())
	}
	off := New(0, 10)
	off.Add("x")
	if off.Has("x") {
		t.Fatal("a zero TTL remembered")
	}
}
