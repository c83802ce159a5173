package throttle

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

// The rate holds: moving 3 MB at 10 MB/s takes at least about 0.3 s minus one burst. Only the
// lower bound on time (upper bound on rate) is asserted: a loaded machine can only make it slower.
func TestRateHolds(t *testing.T) {
	const rate, total = 10_000_000, 3_000_000
	for _, tc := range []struct {
		name string
		move func(l *Limiter) (int64, error)
	}{
		{"reader", func(l *Limiter) (int64, error) {
			return io.Copy(io.Discard, l.Reader(context.Background(), bytes.NewReader(make([]byte, total))))
		}},
		{"writer", func(l *Limiter) (int64, error) {
			return io.Copy(l.Writer(context.Background(), io.Discard), bytes.NewReader(make([]byte, total)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := New(rate)
			start := time.Now()
			n, err := tc.move(l)
			if err != nil || n != total {
				t.Fatalf("moved %d: %v", n, err)
			}
			took := time.Since(start)
			got := float64(total-l.l.Burst()) / took.Seconds() // the first burst is free
			t.Logf("%.1f MB/s against a limit of %.1f MB/s", got/1e6, float64(rate)/1e6)
			if got > rate*1.10 {
				t.Fatalf("%.0f B/s exceeds the limit %d by more than 10%%", got, rate)
			}
		})
	}
}

func TestUnlimitedAndCancel(t *testing.T) {
	var l *Limiter = New(0)
	if l != nil || l.Wait(context.Background(), 1<<30) != nil {
		t.Fatal("zero rate must mean unlimited")
	}
	slow := New(1000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := slow.Wait(ctx, 1<<20); err == nil {
		t.Fatal("Wait ignored a cancelled context")
	}
}

// A priority reader sharing the limiter with ordinary ones gets the link first: it finishes while
// they are still moving, and together they stay within the limit.
func TestPriorityReaderGoesFirst(t *testing.T) {
	const rate, each = 10_000_000, 2_000_000
	l := New(rate)
	start := time.Now()
	done := make(chan string, 4)
	move := func(name string, r io.Reader) {
		if n, err := io.Copy(io.Discard, r); err != nil || n != each {
			t.Errorf("%s moved %d: %v", name, n, err)
		}
		done <- name
	}
	ctx := context.Background()
	for range 3 {
		go move("ordinary", l.Reader(ctx, bytes.NewReader(make([]byte, each))))
	}
	time.Sleep(20 * time.Millisecond) // the ordinary readers hold the link already
	go move("priority", l.PriorityReader(ctx, bytes.NewReader(make([]byte, each))))
	var order []string
	for range 4 {
		order = append(order, <-done)
	}
	took := time.Since(start)
	if got := float64(4*each-l.l.Burst()) / took.Seconds(); got > rate*1.10 {
		t.Fatalf("%.0f B/s together exceeds the limit %d by more than 10%%", got, rate)
	}
	if order[0] != "priority" {
		t.Fatalf("finishing order %v: the priority reader should finish first", order)
	}
}
