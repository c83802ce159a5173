// Package image tests the container image of Shoal end to end: built by cmd/shoal-image, pushed
// to a real registry, pulled by containerd's CRI plugin with crictl through a `shoal agent`, and
// run as a host-network pod whose containerized agent serves the next pull.
package image

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
