package benchnetns

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	Child(nil) // the tunnels and transfers are this test binary, started again
	os.Exit(m.Run())
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("network namespaces need root, and CI runs as root")
		}
		t.Skip("network namespaces need root")
	}
}

func namespaces(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for l := range strings.Lines(string(out)) {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			names = append(names, f[0])
		}
	}
	return names
}

// TestNamespacesServeAndAreRemoved starts an HTTP server inside one namespace, reaches it from
// another namespace over the switch (by a child process there) and from this process through the
// tunnel, and checks that Close removes every namespace, and that a second Setup removes what a
// run that was never closed left (its processes included).
func TestNamespacesServeAndAreRemoved(t *testing.T) {
	needRoot(t)
	const prefix = "shoaltnt-"
	ctx := context.Background()
	dir := t.TempDir()
	n, err := Setup(prefix, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	if _, err := Setup(prefix, dir); err == nil {
		t.Fatal("a second Setup with the same prefix took the lock of a running one")
	}
	a, err := n.Add(ctx, "a", 0, 5_000_000)
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Add(ctx, "b", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A server in a, on its switch address, which the test reaches through a's tunnel; b's
	// loopback does not reach it, and a transfer from b to a crosses the switch.
	srv := a.Command("python3", "-m", "http.server", "--bind", a.IP, "8080", "--directory", dir)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 serves the test page")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	if err := os.WriteFile(dir+"/page", []byte("hello from a"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := a.HTTPClient(5 * time.Second)
	var body []byte
	for i := 0; ; i++ {
		resp, err := c.Get("http://" + a.IP + ":8080/page")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if i == 100 {
			t.Fatalf("the server in a never answered through the tunnel: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(body) != "hello from a" {
		t.Fatalf("through the tunnel: %q", body)
	}
	if _, err := b.Dial(ctx, "tcp", "127.0.0.1:8080"); err == nil {
		t.Fatal("b's loopback reached a's server")
	}
	if rate, err := MeasureLink(ctx, b, a, 2<<20); err != nil || rate <= 0 {
		t.Fatalf("MeasureLink b→a: %v, %v", rate, err)
	}

	// A run that dies without Close: its namespaces and their processes are left, and the next
	// Setup removes them.
	n.lock.Close()
	n.lock = nil
	if got := namespaces(t, prefix); len(got) != 3 {
		t.Fatalf("namespaces %v, want the switch, a and b", got)
	}
	n2, err := Setup(prefix, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := namespaces(t, prefix); len(got) != 1 || got[0] != prefix+"sw" {
		t.Fatalf("after a new Setup: %v, want only its switch", got)
	}
	if err := srv.Wait(); err == nil {
		t.Fatal("the leftover server exited cleanly; it should have been killed")
	}
	if err := n2.Close(); err != nil {
		t.Fatal(err)
	}
	if got := namespaces(t, prefix); len(got) != 0 {
		t.Fatalf("after Close: %v", got)
	}
}
