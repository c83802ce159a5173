package hosted

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps hosted repositories a storage concern: they use the content store and
// the registry API's interfaces, never the agent's fetch pipeline or anything peer-to-peer (the
// seed announces commits through WithCommitHook instead).
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/shoal-oci/shoal/seed/hosted").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/shoal-oci/shoal/agent" || strings.HasPrefix(dep, "github.com/shoal-oci/shoal/p2p") || strings.HasPrefix(dep, "github.com/libp2p/") {
			t.Errorf("seed/hosted depends on %s", dep)
		}
	}
}
