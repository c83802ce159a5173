package agent

import "time"

// SetPeerDeadlines shortens the per-chunk deadline for a test and returns the restore.
func SetPeerDeadlines(grace time.Duration, minRate int64) func() {
	g, r := chunkGrace, minPeerRate
	chunkGrace, minPeerRate = grace, minRate
	return func() { chunkGrace, minPeerRate = g, r }
}
