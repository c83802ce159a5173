// Package benchplot draws the benchmark reports' plots as SVG, written by hand (no plotting tools
// on these machines): the empirical CDF of a set of durations, one step line per series, with
// bounds as vertical dotted lines.
package benchplot

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
	"time"
)

// CDF is a plot of the empirical cumulative distribution of durations.
type CDF struct {
	Title  string // above the plot
	YLabel string // what the fraction counts, e.g. "fraction of nodes done"
	Unit   string // what one value is, for the legend's counts, e.g. "nodes"
	Series []Series
	Bounds []Bound
}

// Series is one step line of a CDF.
type Series struct {
	Label, Color string
	Dash         string // the stroke-dasharray, "" for a solid line
	// Wide draws the line wide and translucent, and before the others, so that a line on top
	// of it stays visible: for a baseline.
	Wide   bool
	Values []time.Duration
}

// Bound is a vertical dotted line at Seconds, labelled "Label = Seconds s".
type Bound struct {
	Label   string
	Seconds float64
}

// SVG draws the plot: the x axis in seconds from 0 to past the largest value and bound, the y
// axis from 0 to 1, and a legend below with each series' label and count.
func (c CDF) SVG() string {
	const (
		W, plotH                 = 760, 440
		left, right, top, bottom = 60, 20, 40, 50
		pw, ph                   = W - left - right, plotH - top - bottom
	)
	ss := slices.Clone(c.Series)
	slices.SortStableFunc(ss, func(a, b Series) int { return cmpBool(!a.Wide, !b.Wide) })
	H := plotH + 18*len(ss) + 10
	xmax := 0.0
	for _, s := range ss {
		for _, d := range s.Values {
			xmax = max(xmax, d.Seconds())
		}
	}
	for _, b := range c.Bounds {
		xmax = max(xmax, b.Seconds)
	}
	step := NiceStep(xmax / 8)
	xmax = math.Max(step, math.Ceil(xmax/step)*step)
	X := func(s float64) float64 { return left + s/xmax*pw }
	Y := func(f float64) float64 { return top + (1-f)*ph }

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	p(`<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	p(`<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(c.Title))
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
	p(`<text x="16" y="%d" text-anchor="middle" transform="rotate(-90 16 %d)">%s</text>`+"\n", top+ph/2, top+ph/2, html.EscapeString(c.YLabel))
	for _, bd := range c.Bounds {
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#555" stroke-dasharray="2 3"/>`+"\n", X(bd.Seconds), top, X(bd.Seconds), top+ph)
		p(`<text x="%.1f" y="%d" font-size="11" fill="#555">%s = %s s</text>`+"\n", X(bd.Seconds)+3, top+12, html.EscapeString(bd.Label), trimFloat(bd.Seconds))
	}
	// Step lines.
	for _, s := range ss {
		if len(s.Values) == 0 {
			continue
		}
		v := slices.Clone(s.Values)
		slices.Sort(v)
		n := float64(len(v))
		pts := []string{fmt.Sprintf("%.1f,%.1f", X(0), Y(0))}
		for i, d := range v {
			x := d.Seconds()
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", X(x), Y(float64(i)/n)), fmt.Sprintf("%.1f,%.1f", X(x), Y(float64(i+1)/n)))
		}
		dash := ""
		if s.Dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.Dash)
		}
		width := "2"
		if s.Wide {
			width = "4\" stroke-opacity=\"0.6"
		}
		p(`<polyline fill="none" stroke="%s" stroke-width="%s"%s points="%s"/>`+"\n", s.Color, width, dash, strings.Join(pts, " "))
	}
	// Legend, below the plot.
	for i, s := range ss {
		y := float64(plotH + 6 + 18*i)
		dash := ""
		if s.Dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.Dash)
		}
		p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", left, y-4, left+24, y-4, s.Color, dash)
		p(`<text x="%d" y="%.1f">%s</text>`+"\n", left+30, y, html.EscapeString(fmt.Sprintf("%s, %d %s", s.Label, len(s.Values), c.Unit)))
	}
	p("</svg>\n")
	return b.String()
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// NiceStep rounds x up to 1, 2 or 5 times a power of ten: a step for an axis or for the windows
// of a table.
func NiceStep(x float64) float64 {
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

// trimFloat writes f with at most two decimals and no trailing zeros.
func trimFloat(f float64) string {
	s := fmt.Sprintf("%.2f", f)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}
