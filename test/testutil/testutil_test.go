package testutil

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParseMetrics(t *testing.T) {
	const text = `# HELP shoal_http_requests_total Requests.
# TYPE shoal_http_requests_total counter
shoal_http_requests_total{code="200",endpoint="blob",method="GET"} 3
shoal_http_requests_total{code="200",endpoint="manifest",method="GET"} 2
shoal_http_requests_total{code="200",endpoint="manifest",method="HEAD"} 5
shoal_http_requests_total{code="404",endpoint="manifest",method="GET"} 1
weird{a="x\"y\\z",b="line\nbreak"} 1.5e3 1700000000000
up 1
`
	samples, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 6 {
		t.Fatalf("got %d samples, want 6: %+v", len(samples), samples)
	}
	tests := []struct {
		name     string
		endpoint string
		want     float64
	}{
		{name: "blob GETs", endpoint: "blob", want: 3},
		{name: "manifest GETs ignore HEAD and 404", endpoint: "manifest", want: 2},
		{name: "unknown endpoint", endpoint: "tags", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found := ServedOK(samples, tt.endpoint)
			if !found || got != tt.want {
				t.Errorf("ServedOK(%q) = %v, %v; want %v, true", tt.endpoint, got, found, tt.want)
			}
		})
	}
	w := samples[4]
	if w.Name != "weird" || w.Labels["a"] != `x"y\z` || w.Labels["b"] != "line\nbreak" || w.Value != 1500 {
		t.Errorf("escaped labels parsed as %+v", w)
	}
	if _, found := Sum(samples, "absent_metric", nil); found {
		t.Error("Sum found a metric that is not there")
	}
}

func TestParseMetricsRejectsGarbage(t *testing.T) {
	for _, line := range []string{`m{a="unterminated} 1`, `m{a=1} 1`, `m{a="x"}`, `m notanumber`} {
		if _, err := ParseMetrics(strings.NewReader(line)); err == nil {
			t.Errorf("ParseMetrics(%q) succeeded", line)
		}
	}
}

func TestProcessStopsGroup(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	// A shell that ignores SIGTERM, with a child: Stop must fall back to SIGKILL for the group.
	p := StartProcess(t, "stubborn", sh, []string{"-c", `trap "" TERM; sleep 60 & echo started; wait`},
		WithStopTimeout(500*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !strings.Contains(p.Output(), "started") {
		select {
		case <-ctx.Done():
			t.Fatal("shell never started")
		case <-time.After(10 * time.Millisecond):
		}
	}
	start := time.Now()
	if err := p.Stop(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop of a process ignoring SIGTERM = %v, want a 'killed' error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s", d)
	}
	select {
	case <-p.Done():
	default:
		t.Error("process still running after Stop")
	}

	clean := StartProcess(t, "sleeper", sh, []string{"-c", "exec sleep 60"})
	if err := clean.Stop(); err == nil || !diedOfSIGTERM(clean.ExitErr()) {
		t.Errorf("sleep stopped with %v, want death by SIGTERM reported", err)
	}
}

func TestRunKillsOnTimeout(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Run(ctx, sh, "-c", "sleep 30 & sleep 30; wait")
	if err == nil {
		t.Fatal("Run of a hanging command succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run returned after %s, want soon after the deadline", d)
	}
}
