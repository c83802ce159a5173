// Package origins runs real registries as origins for the end-to-end tests: Debian's
// docker-registry (CNCF distribution) open, behind basic auth (htpasswd), or behind a token
// server, each on a free 127.0.0.1 port and stopped when the test ends. A test skips without
// docker-registry, except under CI.
package origins

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
)

// DockerRegistry is a running Debian docker-registry (CNCF distribution 2.8) used as an origin.
type DockerRegistry struct {
	Addr string // 127.0.0.1:PORT, also the registry host in image references
	URL  string // http://Addr
	Proc *testutil.Process
}

// StartDockerRegistry starts `docker-registry serve` with its own config: filesystem storage in a
// temporary directory, no auth, plain HTTP on a free 127.0.0.1 port (Debian's stock config turns
// on htpasswd auth). The test is skipped when docker-registry is not installed, except under CI.
func StartDockerRegistry(t testing.TB) *DockerRegistry {
	t.Helper()
	return startDockerRegistry(t, t.TempDir(), "", http.StatusOK)
}

// startDockerRegistry runs docker-registry with storage under dir and auth, a YAML auth section
// ("" for none), and waits until its /v2/ answers ready (200, or 401 behind auth).
func startDockerRegistry(t testing.TB, dir, auth string, ready int) *DockerRegistry {
	t.Helper()
	bin := testutil.RequireProgram(t, "docker-registry")
	r := &DockerRegistry{Addr: testutil.FreeAddr(t)}
	r.URL = "http://" + r.Addr
	if auth != "" {
		auth = "auth:\n" + auth
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
%shttp:
  addr: %s
health:
  storagedriver:
    enabled: false
`, filepath.Join(dir, "storage"), auth, r.Addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Proc = testutil.StartProcess(t, "docker-registry", bin, []string{"serve", cfgPath})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testutil.WaitHTTP(ctx, r.Proc, r.URL+"/v2/", ready); err != nil {
		t.Fatalf("docker-registry never answered: %v\n%s", err, r.Proc.Tail(8<<10))
	}
	return r
}
