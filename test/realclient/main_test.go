// Package realclient pulls images through a real `shoal agent` process with real clients
// (containerd's ctr and skopeo) from a real origin (Debian's docker-registry), and checks both that
// the client got the origin's exact manifest and that the agent, not the origin the clients fall
// back to, served it.
package realclient

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
