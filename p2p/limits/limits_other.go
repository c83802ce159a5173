//go:build !unix

package limits

// fdBudget returns 0, which makes libp2p use its base file descriptor limits.
func fdBudget() int { return 0 }
