package testutil

import (
	"fmt"
	"syscall"
	"time"
)

// KillWait bounds how long Kill waits for a killed process to be reaped.
const KillWait = 10 * time.Second

// Kill ends the node as a crash would: SIGKILL to its process group, with no chance to sync,
// suspend fetches or close its database. It returns once the process has exited. The test's
// cleanup then takes its exit for what it is rather than for a failure to stop.
func (a *Agent) Kill() error {
	a.killed.Store(true)
	if err := syscall.Kill(-a.Proc.Pid(), syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("killing %s: %w", a.Proc.Name(), err)
	}
	select {
	case <-a.Proc.Done():
	case <-time.After(KillWait):
		return fmt.Errorf("%s still running %s after SIGKILL", a.Proc.Name(), KillWait)
	}
	_ = a.Proc.Stop() // reaps what is left of its group; its error is the kill's
	return nil
}
