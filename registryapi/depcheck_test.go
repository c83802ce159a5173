package registryapi

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the HTTP edge independent of where bytes come from: registryapi must
// not import the agent, the store, the seed, or anything peer-to-peer.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/shoal-oci/shoal/registryapi/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/shoal-oci/shoal/agent", "github.com/shoal-oci/shoal/seed", "github.com/shoal-oci/shoal/p2p", "github.com/libp2p/", "go.etcd.io/bbolt"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("registryapi depends on %s", dep)
			}
		}
	}
}
