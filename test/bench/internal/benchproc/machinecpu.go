package benchproc

import (
	"os"
	"strconv"
	"strings"
)

// MachineCPU is the machine-wide CPU time from /proc/stat: busy (everything but idle and
// iowait), iowait and the total, all in clock ticks. Only ratios of its fields mean anything:
// take one before and one after a window, and divide Busy or IOWait of their difference by its
// Total.
type MachineCPU struct{ Busy, IOWait, Total int64 }

// ReadMachineCPU reads the machine's CPU time so far (zero if /proc/stat cannot be read).
func ReadMachineCPU() MachineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return MachineCPU{}
	}
	var m MachineCPU
	for i, s := range f[1:] {
		if i >= 8 { // guest time is already counted in user
			break
		}
		v, _ := strconv.ParseInt(s, 10, 64)
		m.Total += v
		switch i {
		case 3: // idle
		case 4:
			m.IOWait += v
		default:
			m.Busy += v
		}
	}
	return m
}

// Sub is the CPU time from o to m.
func (m MachineCPU) Sub(o MachineCPU) MachineCPU {
	return MachineCPU{Busy: m.Busy - o.Busy, IOWait: m.IOWait - o.IOWait, Total: m.Total - o.Total}
}
