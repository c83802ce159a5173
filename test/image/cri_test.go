package image

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// mirror makes containerd pull images of registry (host:port, plain HTTP) from mirror first
// (host:port), writing registry's hosts.toml under configPath as `shoal configure containerd`
// does. The file applies to the next pull.
func mirror(t *testing.T, configPath, registry, mirror string) {
	t.Helper()
	hosts := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", registry, mirror)
	dir := filepath.Join(configPath, registry)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "hosts.toml.tmp")
	if err := os.WriteFile(tmp, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "hosts.toml")); err != nil {
		t.Fatal(err)
	}
}
