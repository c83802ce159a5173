// Command traceana explains the slowest trials of scenario 2 from an execution trace written by
// `go run ./test/bench/p2p -dht-trace FILE`: for each trial (marked in the trace by the benchmark's
// "trial" log events) it prints the time to first byte, how much of it overlapped a garbage
// collection mark phase or a stop-the-world pause, and how the requester's fetch goroutine
// (agent.(*Agent).runFetch) spent that time: running, runnable (waiting for a CPU), blocked (and
// where), or in a system call.
//
// It is its own module (it needs golang.org/x/exp/trace, which the shoal module does not):
//
//	cd test/bench/p2p/traceana && go run . FILE [N]
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/exp/trace"
)

type trial struct {
	n          int
	start, end trace.Time
	ttfb       float64
}

type span struct {
	a, b trace.Time
	k    string
}

// fetchG is one runFetch goroutine: its state intervals.
type fetchG struct {
	trial *trial
	state string
	since trace.Time
	spans []span
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: traceana TRACE [N]")
		os.Exit(2)
	}
	top := 15
	if len(os.Args) > 2 {
		top, _ = strconv.Atoi(os.Args[2])
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var (
		trials   []*trial
		cur      *trial
		gs       = map[trace.GoID]*fetchG{}
		gcMark   []span
		stw      []span
		markFrom trace.Time
		stwFrom  = map[trace.GoID]trace.Time{}
	)
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		switch ev.Kind() {
		case trace.EventLog:
			l := ev.Log()
			if l.Category != "trial" {
				continue
			}
			var n int
			var ttfb float64
			if strings.HasSuffix(l.Message, " start") {
				fmt.Sscanf(l.Message, "%d start", &n)
				cur = &trial{n: n, start: ev.Time()}
				trials = append(trials, cur)
			} else if cur != nil {
				fmt.Sscanf(l.Message, "%d end ttfb=%f", &n, &ttfb)
				cur.ttfb = ttfb
				cur.end = cur.start + trace.Time(ttfb*1e6)
			}
		case trace.EventRangeBegin:
			switch name := ev.Range().Name; {
			case name == "GC concurrent mark phase":
				markFrom = ev.Time()
			case strings.HasPrefix(name, "stop-the-world"):
				stwFrom[ev.Goroutine()] = ev.Time()
			}
		case trace.EventRangeEnd:
			switch name := ev.Range().Name; {
			case name == "GC concurrent mark phase" && markFrom != 0:
				gcMark = append(gcMark, span{a: markFrom, b: ev.Time()})
			case strings.HasPrefix(name, "stop-the-world"):
				if t, ok := stwFrom[ev.Goroutine()]; ok {
					stw = append(stw, span{a: t, b: ev.Time()})
				}
			}
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			from, to := st.Goroutine()
			if from == trace.GoNotExist && cur != nil && cur.end == 0 && isFetch(st.Stack, ev.Stack()) {
				gs[id] = &fetchG{trial: cur, state: to.String(), since: ev.Time()}
				continue
			}
			g, ok := gs[id]
			if !ok {
				continue
			}
			g.spans = append(g.spans, span{a: g.since, b: ev.Time(), k: g.state})
			g.state, g.since = to.String(), ev.Time()
			if to == trace.GoWaiting || to == trace.GoSyscall {
				g.state += " " + where(st.Reason, ev.Stack())
			}
		}
	}
	byTrial := map[*trial][]*fetchG{}
	for _, g := range gs {
		byTrial[g.trial] = append(byTrial[g.trial], g)
	}
	sort.Slice(trials, func(i, j int) bool { return trials[i].ttfb > trials[j].ttfb })
	var markTotal, first, last trace.Time
	for _, s := range gcMark {
		markTotal += s.b - s.a
	}
	if len(trials) > 0 {
		first, last = trials[0].start, trials[0].end
		for _, t := range trials {
			first, last = min(first, t.start), max(last, t.end)
		}
	}
	inMark := 0
	for _, t := range trials {
		if overlap(gcMark, t.start, t.end) > 0 {
			inMark++
		}
	}
	fmt.Printf("%d trials over %.1f s; %d GC mark phases, %.0f ms in all; %d trials overlapped a mark phase\n\n",
		len(trials), float64(last-first)/1e9, len(gcMark), float64(markTotal)/1e6, inMark)
	show := func(t *trial) {
		fmt.Printf("trial %3d  TTFB %6.1f ms  in GC mark %6.1f ms  stop-the-world %4.2f ms\n",
			t.n, t.ttfb, overlap(gcMark, t.start, t.end), overlap(stw, t.start, t.end))
		for _, g := range byTrial[t] {
			by := map[string]float64{}
			for _, s := range g.spans {
				a, b := max(s.a, t.start), min(s.b, t.end)
				if b > a {
					by[s.k] += float64(b-a) / 1e6
				}
			}
			keys := make([]string, 0, len(by))
			for k := range by {
				keys = append(keys, k)
			}
			sort.Slice(keys, func(i, j int) bool { return by[keys[i]] > by[keys[j]] })
			fmt.Print("           runFetch:")
			for _, k := range keys {
				if by[k] >= 0.2 {
					fmt.Printf(" %s %.1f;", k, by[k])
				}
			}
			fmt.Println()
		}
	}
	fmt.Printf("The %d slowest:\n", min(top, len(trials)))
	for _, t := range trials[:min(top, len(trials))] {
		show(t)
	}
	if len(trials) > 2 {
		fmt.Println("\nAround the median:")
		for _, t := range trials[len(trials)/2-1 : len(trials)/2+2] {
			show(t)
		}
	}
}

func isFetch(own, creator trace.Stack) bool {
	for fr := range own.Frames() {
		if strings.Contains(fr.Func, "agent.(*Agent).runFetch") {
			return true
		}
	}
	for fr := range creator.Frames() {
		if strings.Contains(fr.Func, "agent.(*Agent).joinFetch") {
			return true
		}
	}
	return false
}

// where names a blocking event by its reason and the innermost shoal frame of its stack.
func where(reason string, s trace.Stack) string {
	for fr := range s.Frames() {
		if strings.Contains(fr.Func, "shoal-oci/shoal/") {
			return reason + "@" + fr.Func[strings.LastIndex(fr.Func, "/")+1:]
		}
	}
	return reason
}

func overlap(ss []span, a, b trace.Time) float64 {
	var ms float64
	for _, s := range ss {
		if lo, hi := max(s.a, a), min(s.b, b); hi > lo {
			ms += float64(hi-lo) / 1e6
		}
	}
	return ms
}
