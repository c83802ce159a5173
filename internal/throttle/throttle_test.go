package throttle

import (
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
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

// The priority reader goes ahead of the others: while it moves its bytes, the ordinary readers,
// which held the link before it, move at most what they had already been granted (a burst each).
// Without priority they would share the link and move three times what it does. Counting bytes,
// not timing the finish, keeps the verdict the limiter's and not the scheduler's on a loaded
// machine (an earlier version of this test failed so).
func TestPriorityReaderGoesFirst(t *testing.T) {
	const rate, size = 10_000_000, 8_000_000
	l := New(rate)
	burst := int64(l.l.Burst())
	ctx := context.Background()
	start := time.Now()
	var ordinary atomic.Int64
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n, err := io.Copy(countingWriter{&ordinary}, l.Reader(ctx, bytes.NewReader(make([]byte, size)))); err != nil || n != size {
				t.Errorf("ordinary reader moved %d: %v", n, err)
			}
		}()
	}
	waitFor(t, func() bool { return ordinary.Load() >= burst }, "the ordinary readers never started")
	var before int64
	src := &firstRead{Reader: bytes.NewReader(make([]byte, size)), at: func() { before = ordinary.Load() }}
	if n, err := io.Copy(io.Discard, l.PriorityReader(ctx, src)); err != nil || n != size {
		t.Fatalf("priority reader moved %d: %v", n, err)
	}
	during := ordinary.Load() - before
	took := time.Since(start)
	wg.Wait()
	// Besides what they were granted before (a burst each, and one more in flight), the ordinary
	// readers get the floor share while the priority reader runs: an eighth of the rate.
	if allowed := 4*burst + int64(float64(rate)/floorShare*took.Seconds()*1.25) + int64(l.floor.Burst()); during > allowed {
		t.Errorf("the ordinary readers moved %d bytes while the priority reader moved %d; want at most %d: what they were granted before it and the floor share", during, size, allowed)
	}
	if got := float64(4*size-burst) / time.Since(start).Seconds(); got > rate*1.10 {
		t.Errorf("%.0f B/s together exceeds the limit %d by more than 10%%", got, rate)
	}
}

// While a priority reader holds the link, the ordinary readers still move: at least their floor
// share, so a coordinator's long origin fetch does not starve the node's own peer downloads past
// their deadlines. Bytes are counted against the priority reader's own progress, not timed.
func TestOrdinaryReadersKeepAFloorShare(t *testing.T) {
	const rate, size = 10_000_000, 6_000_000
	l := New(rate)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var prio, ordinary atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		if n, err := io.Copy(countingWriter{&prio}, l.PriorityReader(ctx, bytes.NewReader(make([]byte, size)))); err != nil || n != size {
			t.Errorf("priority reader moved %d: %v", n, err)
		}
	}()
	waitFor(t, func() bool { return prio.Load() >= int64(l.l.Burst()) }, "the priority reader never started")
	from := prio.Load()
	go func() { // ends with ctx
		_, _ = io.Copy(countingWriter{&ordinary}, l.Reader(ctx, endless{}))
	}()
	<-done
	moved, during := ordinary.Load(), size-from
	// The floor share is an eighth of the link, so about during/7 against the priority reader's
	// bytes; a quarter of that leaves room for a busy machine's scheduling.
	if want := during / (floorShare - 1) / 4; moved < want {
		t.Errorf("the ordinary reader moved %d bytes while the priority reader moved %d; want at least %d (its floor share)", moved, during, want)
	}
	t.Logf("ordinary %d bytes while priority %d", moved, during)
}

// A priority reader whose own source is slower than the link leaves the rest of the link to the
// ordinary readers: they are not held to the floor share. Bytes are counted against the priority
// reader's progress, as above; on a fast link and on a slow one, where an ordinary read is a
// whole burst.
func TestPriorityReaderLeavesTheRestOfTheLink(t *testing.T) {
	for _, tc := range []struct {
		name                string
		rate, srcRate, size int64
		// want is what the ordinary reader must move per byte of the priority reader's: the
		// link's spare is 1.5 and 3 of them. The floor share alone would give 0.15 and 0.35;
		// on the slow link, reads of a whole burst taken only whole (never what is left
		// beyond the headroom) gave about 2, and taken in part 3.
		want float64
	}{
		{"10MB/s", 10_000_000, 4_000_000, 4_000_000, 1},
		{"1MB/s", 1_000_000, 250_000, 750_000, 2.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := New(tc.rate)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var prio, ordinary atomic.Int64
			done := make(chan struct{})
			start := time.Now()
			go func() {
				defer close(done)
				// Its source is an origin slower than this node's link.
				// It gives a few KiB at a time, as a TCP connection does, so the priority reader
				// asks for tokens every few milliseconds and holds the link throughout.
				src := New(tc.srcRate).Reader(ctx, smallReads{bytes.NewReader(make([]byte, tc.size))})
				if n, err := io.Copy(countingWriter{&prio}, l.PriorityReader(ctx, src)); err != nil || n != tc.size {
					t.Errorf("priority reader moved %d: %v", n, err)
				}
			}()
			waitFor(t, func() bool { return prio.Load() >= tc.size/4 }, "the priority reader never started")
			from := prio.Load()
			go func() { // ends with ctx; reads of a whole burst, as a swarm's 256 KiB buffer is on a slow link
				_, _ = io.CopyBuffer(countingWriter{&ordinary}, l.Reader(ctx, endless{}), make([]byte, 1<<20))
			}()
			<-done
			moved, during := ordinary.Load(), tc.size-from
			if want := int64(float64(during) * tc.want); moved < want {
				t.Errorf("the ordinary reader moved %d bytes while the priority reader moved %d; want at least %d of the link's spare", moved, during, want)
			}
			cancel()
			if got := float64(tc.size+ordinary.Load()-int64(2*l.l.Burst())) / time.Since(start).Seconds(); got > float64(tc.rate)*1.10 {
				t.Errorf("%.0f B/s together exceeds the limit %d by more than 10%%", got, tc.rate)
			}
			t.Logf("ordinary %d bytes while priority %d", moved, during)
		})
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool, failure string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(failure)
		}
	}
}

// smallReads reads at most 4 KiB at a time.
type smallReads struct{ r io.Reader }

func (s smallReads) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 4<<10)]) }

// endless reads zeros forever.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// countingWriter counts what is written to it.
type countingWriter struct{ n *atomic.Int64 }

func (w countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// firstRead calls at before its first Read.
type firstRead struct {
	io.Reader
	at   func()
	once sync.Once
}

func (r *firstRead) Read(p []byte) (int, error) {
	r.once.Do(r.at)
	return r.Reader.Read(p)
}

// Spare says whether the link carried less than its rate lately: yes when idle, no while a
// stream keeps it full, yes again a second after it stopped. A nil limiter does not know.
func TestSpare(t *testing.T) {
	if (*Limiter)(nil).Spare() {
		t.Fatal("an unlimited link reported spare")
	}
	const rate = 10_000_000
	l := New(rate)
	if !l.Spare() {
		t.Fatal("an idle link not spare")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // fills the link until cancelled
		defer close(done)
		for l.Wait(ctx, l.l.Burst()) == nil {
		}
	}()
	time.Sleep(3 * meterWindow)
	busy := l.Spare()
	cancel()
	<-done
	if busy {
		t.Error("a full link reported spare")
	}
	time.Sleep(2 * meterWindow)
	if !l.Spare() {
		t.Error("the link not spare a second after its stream stopped")
	}
}
