package realclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
)

// TestSkopeoPathPrefixedMirror pulls with skopeo through the agent as CRI-O and podman are set
// up for several registries on one agent: a registries.conf mirror location
// "<agent>/<registry name>", which makes skopeo ask for /v2/<registry name>/<repo>/... without
// ns. The registry name is an alias of the origin (--registry registry.test=<origin>), after a
// first upstream that is never reached, so the prefix alone selects the origin.
func TestSkopeoPathPrefixedMirror(t *testing.T) {
	skopeo := testutil.RequireProgram(t, "skopeo")
	f := newFixture(t)
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const name = "registry.test"
	agent := testutil.StartAgent(t, bin, []string{"http://" + testutil.FreeAddr(t), name + "=" + f.origin.URL})
	conf := fmt.Sprintf(`unqualified-search-registries = []

[[registry]]
prefix = %[1]q
location = %[2]q
insecure = true

[[registry.mirror]]
location = %[3]q
insecure = true
`, name, f.origin.Addr, agent.Addr+"/"+name)
	confPath := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "image")
	env := []string{"XDG_RUNTIME_DIR=" + t.TempDir(), "HOME=" + t.TempDir()}
	out, err := testutil.RunEnv(ctx, env, skopeo, "--registries-conf", confPath, "--insecure-policy", "--tmpdir", t.TempDir(),
		"copy", "--retry-times", "0", "docker://"+name+"/test/oci:v1", "oci:"+dest+":v1")
	if err != nil {
		t.Fatalf("skopeo copy through the path-prefixed mirror failed: %v", err)
	}
	got, err := ociLayoutDigest(dest, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if got != f.oci.Manifest {
		t.Errorf("skopeo wrote manifest %s, want the origin's %s (%s)", got, f.oci.Manifest, lastLine(out))
	}
	// skopeo falls back to the origin when the mirror fails: the agent must have served it all.
	agent.RequireServed(ctx, t, 1, blobCount(f.oci), all(f.oci)...)
}

// TestMetricsListenerAndLoneReadiness runs an agent as a DaemonSet would: /v2 on loopback, the
// probes and metrics on a second listener, and a bootstrap peer that never answers (the first
// node of a cluster, or a one-node one). It is ready at once, and the second listener serves
// /metrics, /healthz and /readyz but not /v2.
func TestMetricsListenerAndLoneReadiness(t *testing.T) {
	bin := shoal.Path(t)
	metricsAddr := testutil.FreeAddr(t)
	nobody := testutil.FreeAddr(t)
	host, port, _ := strings.Cut(nobody, ":")
	// StartAgent returns once /readyz on --listen answers 200 (and fails the test if it never does).
	agent := testutil.StartAgent(t, bin, []string{"http://" + testutil.FreeAddr(t)},
		"--metrics-listen", metricsAddr, "--bootstrap", "/ip4/"+host+"/tcp/"+port)

	client := &http.Client{Timeout: 10 * time.Second}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/readyz", "/healthz"} {
		if status, body := get("http://" + metricsAddr + p); status != http.StatusOK {
			t.Errorf("%s on --metrics-listen: %d %q, want 200", p, status, body)
		}
	}
	status, body := get("http://" + metricsAddr + "/metrics")
	if status != http.StatusOK || !strings.Contains(body, "shoal_") {
		t.Errorf("/metrics on --metrics-listen: %d, want 200 with the agent's shoal_ metrics", status)
	}
	if status, _ := get("http://" + metricsAddr + "/v2/"); status != http.StatusNotFound {
		t.Errorf("/v2/ on --metrics-listen: %d, want 404: the registry API stays on --listen", status)
	}
	if status, _ := get("http://" + metricsAddr + "/shoal/v1/status"); status != http.StatusNotFound {
		t.Errorf("/shoal/v1/status on --metrics-listen: %d, want 404", status)
	}
	if status, _ := get(agent.URL + "/metrics"); status != http.StatusOK {
		t.Errorf("/metrics on --listen: %d, want 200 (it stays there too)", status)
	}
}
