// Package benchreport holds what the benchmark programs' Markdown reports share: the machine
// section (date, go version, kernel, CPU, memory, load, wall time), the units their figures are
// written in, medians and percentiles, and writing the results file while keeping its
// hand-written part.
package benchreport

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Machine describes where and when a benchmark ran.
type Machine struct {
	Date, GoVersion, Kernel, CPU, Mem string
	NProc                             int
	LoadBefore, LoadAfter             string // /proc/loadavg's three averages
	Elapsed                           time.Duration
	began                             time.Time
}

// ReadMachine describes this machine now, at the start of a run.
func ReadMachine() Machine {
	m := Machine{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), NProc: runtime.NumCPU(),
		GoVersion: runtime.Version(), began: time.Now()}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	m.CPU = procField("/proc/cpuinfo", "model name")
	m.Mem = procField("/proc/meminfo", "MemTotal")
	m.LoadBefore = loadavg()
	return m
}

// Finish records the load and the wall time at the end of the run.
func (m *Machine) Finish() {
	m.LoadAfter = loadavg()
	m.Elapsed = time.Since(m.began)
}

// Markdown is the machine's list items, from the date to the wall time. compare says what the
// reader should compare, since the machine may be shared ("scenarios of the same run, not
// across runs").
func (m *Machine) Markdown(compare string) string {
	return fmt.Sprintf("- Date: %s\n- nproc: %d; CPU: %s; memory: %s\n- %s\n- Kernel: %s\n"+
		"- Load average before / after: %s / %s (the machine may be shared: compare %s)\n"+
		"- Benchmark wall time: %s\n",
		m.Date, m.NProc, m.CPU, m.Mem, m.GoVersion, m.Kernel, m.LoadBefore, m.LoadAfter, compare, m.Elapsed.Round(time.Second))
}

func procField(path, field string) string {
	f, err := os.Open(path)
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == field {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// WriteFile writes report to path (relative to the module root root), and keeps what followed
// marker in the file it replaces: the hand-written analysis below the generated part. With
// marker "" it keeps nothing. It returns the path written.
func WriteFile(root, path, report, marker string) (string, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, path)
	}
	if marker != "" {
		if b, err := os.ReadFile(path); err == nil {
			if i := strings.Index(string(b), marker); i >= 0 {
				report += "\n" + string(b[i:])
			}
		}
	}
	return path, os.WriteFile(path, []byte(report), 0o644)
}

// Median is the middle value of v (the mean of the two middle ones for an even count; 0 for
// none).
func Median[T int64 | float64 | time.Duration | int](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Percentile is the nearest-rank percentile of v (p in 0..100; 100 is the maximum; 0 for none).
func Percentile[T int64 | float64 | time.Duration](v []T, p float64) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// Met marks whether a target was met.
func Met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// MBps is n bytes in d as 10⁶ bytes per second.
func MBps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

// PerGiB is d per GiB of size bytes: "0.54 s/GiB".
func PerGiB(d time.Duration, size int64) string {
	return fmt.Sprintf("%.2f s/GiB", d.Seconds()/(float64(size)/(1<<30)))
}

// IBytes is a size in binary units: "1 GiB", "1.5 GiB", "256 MiB", "4 KiB", "100 B".
func IBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// MiB is a size in MiB with one decimal: memory figures.
func MiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// Ms is a duration in milliseconds with one decimal.
func Ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

// Secs is a duration in seconds with three decimals.
func Secs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }
