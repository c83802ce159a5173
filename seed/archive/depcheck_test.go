package archive_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps import and export plain registry clients: they must work against any
// registry, so they import neither the agent, the seed's server side, nor anything peer-to-peer.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/shoal-oci/shoal/seed/archive").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/shoal-oci/shoal/agent", "github.com/shoal-oci/shoal/p2p",
			"github.com/shoal-oci/shoal/registryapi", "github.com/libp2p/", "go.etcd.io/bbolt"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("seed/archive depends on %s", dep)
			}
		}
	}
}
