//go:build unix

package limits

import "syscall"

// fdBudget is the number of file descriptors libp2p may use: half the soft limit, as libp2p's own
// autoscaling does (Go raises the soft limit to the hard limit at start).
func fdBudget() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0 // libp2p then uses its base limits
	}
	return int(min(l.Cur, 1<<30) / 2)
}
