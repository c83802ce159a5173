package benchreport

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUnits(t *testing.T) {
	for n, want := range map[int64]string{1 << 30: "1 GiB", 3 << 29: "1.5 GiB", 256 << 20: "256 MiB", 4 << 10: "4 KiB", 100: "100 B"} {
		if got := IBytes(n); got != want {
			t.Errorf("IBytes(%d) = %q, want %q", n, got, want)
		}
	}
	if Median([]int{3, 1, 2}) != 2 || Median([]float64{1, 2, 3, 4}) != 2.5 || Median([]time.Duration{}) != 0 {
		t.Error("Median")
	}
	v := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for p, want := range map[float64]float64{0: 1, 10: 1, 11: 2, 50: 5, 95: 10, 99: 10, 100: 10} {
		if got := Percentile(v, p); got != want {
			t.Errorf("Percentile(1..10, %v) = %v, want %v", p, got, want)
		}
	}
	if Percentile([]time.Duration{}, 50) != 0 {
		t.Error("Percentile of none")
	}
	if Secs(1500*time.Millisecond) != "1.500 s" || Ms(1500*time.Microsecond) != "1.5 ms" || MiB(3<<19) != "1.5 MiB" {
		t.Error("Secs, Ms or MiB")
	}
}

func TestWriteFileKeepsTheAnalysis(t *testing.T) {
	dir := t.TempDir()
	const marker = "<!-- kept -->"
	p := filepath.Join(dir, "r.md")
	if err := os.WriteFile(p, []byte("old numbers\n"+marker+"\nanalysis\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteFile(dir, "r.md", "new numbers\n", marker); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if string(b) != "new numbers\n\n"+marker+"\nanalysis\n" {
		t.Fatalf("%q", b)
	}
	m := ReadMachine()
	m.Finish()
	if md := m.Markdown("x"); !strings.Contains(md, "- nproc: ") || !strings.Contains(md, "compare x)") {
		t.Fatalf("%s", md)
	}
}
