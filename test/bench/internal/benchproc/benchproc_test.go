package benchproc

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestProcReadings(t *testing.T) {
	if hwm, err := Status(os.Getpid(), "VmHWM"); err != nil || hwm <= 0 {
		t.Fatalf("VmHWM = %d, %v", hwm, err)
	}
	if _, err := Status(os.Getpid(), "NoSuchField"); err == nil {
		t.Fatal("a missing field read as a value")
	}
	m0 := ReadMachineCPU()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) { // burn a little CPU so that it shows
	}
	if d := ReadMachineCPU().Sub(m0); d.Busy <= 0 || d.IOWait < 0 || d.Busy+d.IOWait > d.Total {
		t.Fatalf("machine CPU over 2 busy seconds: %+v", d)
	}
	u, s, err := CPUTimes(0)
	if err != nil || u+s <= 0 {
		t.Fatalf("CPU %v + %v, %v", u, s, err)
	}
	if c, err := CPUTime(os.Getpid()); err != nil || c <= 0 {
		t.Fatalf("CPUTime = %v, %v", c, err)
	}
}

func TestOutputKeepsTheStart(t *testing.T) {
	o := &Output{Limit: 10}
	o.Write([]byte("0123456789ab"))
	o.Write([]byte("dropped"))
	if got := o.String(); got != "0123456789ab" || strings.Contains(got, "dropped") {
		t.Fatalf("output %q", got)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	if err := WaitFor(context.Background(), time.Second, time.Millisecond, "three", func() bool { n++; return n >= 3 }); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(context.Background(), 20*time.Millisecond, time.Millisecond, "never", func() bool { return false }); err == nil {
		t.Fatal("WaitFor of a condition that never holds returned nil")
	}
	if p, err := FreePort(); err != nil || p <= 0 {
		t.Fatalf("FreePort = %d, %v", p, err)
	}
}
