// Package chaos runs real `shoal` processes through crashes and churn: nodes killed with
// SIGKILL at random moments of pulls, swarm fetches, pushes and commits, checked with
// `shoal store verify` after every kill; and a cluster whose nodes are killed and restarted while
// it pulls, against a real registry behind a counting proxy. Every random choice comes from a
// seeded source whose seed is logged; SHOAL_CHAOS_SEED replays a run.
package chaos

import (
	"os"
	"testing"

	"github.com/shoal-oci/shoal/test/testutil"
)

var shoal testutil.LazyBinary

func TestMain(m *testing.M) {
	code := m.Run()
	shoal.Remove()
	os.Exit(code)
}
