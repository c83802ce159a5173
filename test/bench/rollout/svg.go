package main

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
	"time"
)

// svg draws the empirical CDF of the per-node pull times of every scenario (all runs pooled):
// one step line per scenario, the update's completion times since the rollout began as a dashed
// line, and the bounds as vertical dotted lines. Written by hand: no plotting tools here.
func (r *report) svg() string {
	const (
		W, plotH                 = 760, 440
		left, right, top, bottom = 60, 20, 40, 50
		pw, ph                   = W - left - right, plotH - top - bottom
	)
	type series struct {
		label, color string
		dash         string
		v            []time.Duration
	}
	colors := map[string]string{"create": "#1f77b4", "update": "#2ca02c", "origin-only": "#d62728", "seeded": "#9467bd"}
	var ss []series
	for _, n := range r.scenarioNames() {
		a := r.aggregate(n)
		ss = append(ss, series{label: n + " (pull time)", color: colors[n], v: a.durs})
		if n == "update" {
			ss = append(ss, series{label: "update (time from the first wave's start to done)", color: colors[n], dash: "6 4", v: a.sinceT0})
		}
	}
	// Draw the baseline first, so that a P2P line on top of it stays visible.
	slices.SortStableFunc(ss, func(a, b series) int {
		return cmpBool(!strings.HasPrefix(a.label, "origin-only"), !strings.HasPrefix(b.label, "origin-only"))
	})
	H := plotH + 18*len(ss) + 10
	xmax := 0.0
	for _, s := range ss {
		for _, d := range s.v {
			xmax = max(xmax, d.Seconds())
		}
	}
	bounds := []struct {
		label string
		x     float64
	}{{"max(S/B, S/O)", r.bound("create")}}
	if slices.Contains(r.scenarioNames(), "origin-only") {
		bounds = append(bounds, struct {
			label string
			x     float64
		}{"N·S/O", r.bound("origin-only")})
	}
	for _, b := range bounds {
		xmax = max(xmax, b.x)
	}
	step := niceStep(xmax / 8)
	xmax = math.Max(step, math.Ceil(xmax/step)*step)
	X := func(s float64) float64 { return left + s/xmax*pw }
	Y := func(f float64) float64 { return top + (1-f)*ph }

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	p(`<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	p(`<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(fmt.Sprintf(
		"Per-node pull time, CDF: N=%d, S=%s in %d layers, B=%s, origin %s", r.cfg.nodes, human(r.cfg.size), r.cfg.layers, perSec(r.cfg.link), perSec(r.cfg.originRate))))
	// Grid and axes.
	for x := 0.0; x <= xmax+step/2; x += step {
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", X(x), top, X(x), top+ph)
		p(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", X(x), top+ph+16, trimFloat(x))
	}
	for _, f := range []float64{0, 0.25, 0.5, 0.75, 1} {
		p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, Y(f), left+pw, Y(f))
		p(`<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, Y(f), trimFloat(f))
	}
	p(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	p(`<text x="%d" y="%d" text-anchor="middle">seconds</text>`+"\n", left+pw/2, plotH-12)
	p(`<text x="16" y="%d" text-anchor="middle" transform="rotate(-90 16 %d)">fraction of nodes done</text>`+"\n", top+ph/2, top+ph/2)
	for _, bd := range bounds {
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#555" stroke-dasharray="2 3"/>`+"\n", X(bd.x), top, X(bd.x), top+ph)
		p(`<text x="%.1f" y="%d" font-size="11" fill="#555">%s = %s s</text>`+"\n", X(bd.x)+3, top+12, html.EscapeString(bd.label), trimFloat(bd.x))
	}
	// Step lines.
	for _, s := range ss {
		if len(s.v) == 0 {
			continue
		}
		v := slices.Clone(s.v)
		slices.Sort(v)
		n := float64(len(v))
		pts := []string{fmt.Sprintf("%.1f,%.1f", X(0), Y(0))}
		for i, d := range v {
			x := d.Seconds()
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", X(x), Y(float64(i)/n)), fmt.Sprintf("%.1f,%.1f", X(x), Y(float64(i+1)/n)))
		}
		dash := ""
		if s.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.dash)
		}
		width := "2"
		if strings.HasPrefix(s.label, "origin-only") {
			width = "4\" stroke-opacity=\"0.6"
		}
		p(`<polyline fill="none" stroke="%s" stroke-width="%s"%s points="%s"/>`+"\n", s.color, width, dash, strings.Join(pts, " "))
	}
	// Legend, below the plot.
	for i, s := range ss {
		y := float64(plotH + 6 + 18*i)
		dash := ""
		if s.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.dash)
		}
		p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", left, y-4, left+24, y-4, s.color, dash)
		p(`<text x="%d" y="%.1f">%s</text>`+"\n", left+30, y, html.EscapeString(fmt.Sprintf("%s, %d nodes", s.label, len(s.v))))
	}
	p("</svg>\n")
	return b.String()
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= x {
			return m * e
		}
	}
	return 10 * e
}

func trimFloat(f float64) string {
	s := fmt.Sprintf("%.2f", f)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}
