// Package benchtimeline records byte counters over a benchmark's run (what an origin sent, what
// the clients received) at a fixed interval, and turns the samples into rates: a Markdown table
// of the rates in windows, how long a rate stayed near its limit, and the peak rate.
package benchtimeline

import (
	"fmt"
	"strings"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchplot"
)

// Interval is the time between two samples.
const Interval = 250 * time.Millisecond

// Sample is the counters at one moment.
type Sample struct {
	T      time.Duration // since the start of the recording
	Counts []int64       // each counter's increase since the start, in the order given to Record
}

// Timeline is the samples of a recording, in time order.
type Timeline []Sample

// Recorder samples counters every Interval until Stop.
type Recorder struct {
	stop chan struct{}
	done chan struct{}
	tl   Timeline
}

// Record starts sampling counters (each returns a running total, such as an atomic counter's
// Load) every Interval; sample times count from t0, increases from the totals when Record is
// called. Stop it to get the timeline.
func Record(t0 time.Time, counters ...func() int64) *Recorder {
	base := make([]int64, len(counters))
	for i, c := range counters {
		base[i] = c()
	}
	r := &Recorder{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		tk := time.NewTicker(Interval)
		defer tk.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-tk.C:
				s := Sample{T: time.Since(t0), Counts: make([]int64, len(counters))}
				for i, c := range counters {
					s.Counts[i] = c() - base[i]
				}
				r.tl = append(r.tl, s)
			}
		}
	}()
	return r
}

// Stop ends the recording and returns its samples.
func (r *Recorder) Stop() Timeline {
	close(r.stop)
	<-r.done
	return r.tl
}

// Table writes the rates of the counters in MB/s over windows of about a twentieth of span (at
// least 1 s, a round number of seconds), up to one window past span: a header row whose first
// cell is head and whose others are the windows' bounds in seconds, then one row per counter,
// labelled with rows[i]. It writes nothing for fewer than two samples.
func (tl Timeline) Table(head string, rows []string, span time.Duration) string {
	if len(tl) < 2 {
		return ""
	}
	w := time.Duration(benchplot.NiceStep(span.Seconds()/20) * float64(time.Second))
	w = max(w, time.Second)
	cells := make([][]string, len(rows)+1)
	cells[0] = []string{head}
	for i, l := range rows {
		cells[i+1] = []string{l}
	}
	prev := Sample{Counts: make([]int64, len(rows))}
	next := w
	for j, x := range tl {
		if x.T < next && j != len(tl)-1 {
			continue
		}
		dt := (x.T - prev.T).Seconds()
		if dt <= 0 {
			continue
		}
		cells[0] = append(cells[0], fmt.Sprintf("%.0f–%.0f", prev.T.Seconds(), x.T.Seconds()))
		for i := range rows {
			cells[i+1] = append(cells[i+1], fmt.Sprintf("%.0f", float64(x.Counts[i]-prev.Counts[i])/dt/1e6))
		}
		prev = x
		next = x.T + w
		if x.T > span+w {
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(cells[0], " | "), strings.Repeat("---:|", len(cells[0])))
	for _, row := range cells[1:] {
		fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
	}
	return b.String() + "\n"
}

// window is the number of samples in the 1 s windows of Busy and Peak.
const window = int(time.Second / Interval)

// Busy is how long counter i's rate, over 1 s windows, was at least share of limit (bytes/s);
// 0 when there is no limit.
func (tl Timeline) Busy(i int, limit int64, share float64) time.Duration {
	var busy time.Duration
	for j := window; j < len(tl); j++ {
		dt := (tl[j].T - tl[j-window].T).Seconds()
		if dt <= 0 {
			continue
		}
		rate := float64(tl[j].Counts[i]-tl[j-window].Counts[i]) / dt
		if limit > 0 && rate >= share*float64(limit) {
			busy += tl[j].T - tl[j-1].T
		}
	}
	return busy
}

// Peak is counter i's highest rate over 1 s windows, in bytes/s.
func (tl Timeline) Peak(i int) int64 {
	var peak int64
	for j := window; j < len(tl); j++ {
		dt := (tl[j].T - tl[j-window].T).Seconds()
		if dt <= 0 {
			continue
		}
		peak = max(peak, int64(float64(tl[j].Counts[i]-tl[j-window].Counts[i])/dt))
	}
	return peak
}
