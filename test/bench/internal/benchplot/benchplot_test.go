package benchplot

import (
	"strings"
	"testing"
	"time"
)

func TestCDF(t *testing.T) {
	svg := CDF{
		Title: "pulls <N=3>", YLabel: "fraction of nodes done", Unit: "nodes",
		Series: []Series{
			{Label: "p2p", Color: "#111", Values: []time.Duration{3 * time.Second, time.Second, 2 * time.Second}},
			{Label: "baseline", Color: "#222", Wide: true, Values: []time.Duration{9 * time.Second}},
		},
		Bounds: []Bound{{Label: "S/B", Seconds: 12}},
	}.SVG()
	for _, want := range []string{
		"<svg ", "pulls &lt;N=3&gt;", ">fraction of nodes done<", "S/B = 12 s", "p2p, 3 nodes", "baseline, 1 nodes",
		`stroke="#222" stroke-width="4" stroke-opacity="0.6"`, "</svg>\n",
	} {
		if !strings.Contains(svg, want) {
			t.Fatalf("no %q in\n%s", want, svg)
		}
	}
	// The wide baseline is drawn (and listed) first; the axis ends at the bound, in steps of 2 s.
	if strings.Index(svg, `stroke="#222"`) > strings.Index(svg, `stroke="#111"`) {
		t.Fatal("the wide line is drawn over the others")
	}
	if !strings.Contains(svg, ">12</text>") || !strings.Contains(svg, ">10</text>") || strings.Contains(svg, ">14</text>") {
		t.Fatalf("x axis:\n%s", svg)
	}
}

func TestNiceStep(t *testing.T) {
	for x, want := range map[float64]float64{0: 1, 0.3: 0.5, 1: 1, 1.2: 2, 3: 5, 7: 10, 45: 50} {
		if got := NiceStep(x); got != want {
			t.Errorf("NiceStep(%v) = %v, want %v", x, got, want)
		}
	}
}
