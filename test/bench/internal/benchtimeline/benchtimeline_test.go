package benchtimeline

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// ramp is 4 s of samples: counter 0 at 2 MB/s for the first 2 s and 0 after, counter 1 at
// 1 MB/s throughout.
func ramp() Timeline {
	var tl Timeline
	for j := 1; j <= 16; j++ {
		t := time.Duration(j) * Interval
		c0 := int64(min(j, 8)) * 500_000
		tl = append(tl, Sample{T: t, Counts: []int64{c0, int64(j) * 250_000}})
	}
	return tl
}

func TestRates(t *testing.T) {
	tl := ramp()
	want := "| s | 0–1 | 1–2 | 2–3 | 3–4 |\n|---:|---:|---:|---:|---:|\n| a | 2 | 2 | 0 | 0 |\n| b | 1 | 1 | 1 | 1 |\n\n"
	if got := tl.Table("s", []string{"a", "b"}, 4*time.Second); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
	if Timeline(tl[:1]).Table("s", []string{"a", "b"}, time.Second) != "" {
		t.Fatal("a table of one sample")
	}
	// The first full 1 s window ends at the fifth sample (1.25 s); those ending at 1.25 … 2 s
	// hold 2 MB/s: four samples, 250 ms each.
	if got := tl.Busy(0, 2_000_000, 0.9); got != 4*Interval {
		t.Fatalf("busy %v", got)
	}
	if tl.Busy(0, 0, 0.9) != 0 || tl.Peak(0) != 2_000_000 || tl.Peak(1) != 1_000_000 {
		t.Fatalf("busy without a limit %v, peaks %d, %d", tl.Busy(0, 0, 0.9), tl.Peak(0), tl.Peak(1))
	}
}

func TestRecord(t *testing.T) {
	var n atomic.Int64
	n.Store(1000) // counted before the recording: not in the samples
	r := Record(time.Now(), n.Load)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		n.Add(10)
		time.Sleep(10 * time.Millisecond)
		if i > 60 { // at least 600 ms: two samples or more
			break
		}
	}
	tl := r.Stop()
	if len(tl) < 2 {
		t.Fatalf("%d samples", len(tl))
	}
	last := tl[len(tl)-1]
	if last.Counts[0] <= 0 || last.Counts[0] > n.Load()-1000 || last.T < tl[0].T {
		t.Fatalf("samples %+v, counter %d", tl, n.Load())
	}
	if !strings.HasPrefix(tl.Table("t", []string{"n"}, time.Second), "| t |") {
		t.Fatal("no table")
	}
}
