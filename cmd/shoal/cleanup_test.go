package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cleanup restores what configure wrote, then answers done until --serve-for has passed;
// cleanup-wait confirms it through the same endpoint, and fails, bounded and saying why, where no
// cleanup pod answers.
func TestCleanupThenWait(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs.d")
	if out, err := run(t, "configure", "containerd", "--config-path", dir, "--registry", "ghcr.io"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the cleanup command listens there itself

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	app := newApp()
	var cleanupOut bytes.Buffer
	app.Writer, app.ErrWriter = &cleanupOut, &cleanupOut
	served := make(chan error, 1)
	go func() {
		served <- app.RunContext(ctx, []string{"shoal", "cleanup", "--config-path", dir, "--listen", addr, "--serve-for", "0"})
	}()
	// urfave/cli's shared help flag races when two apps parse at once: start the waiter only
	// once the cleanup command answers (done or not), i.e. after its flags are parsed.
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if i > 2000 {
			cancel()
			t.Fatalf("cleanup never listened: %v", <-served)
		}
		time.Sleep(5 * time.Millisecond)
	}
	out, err := run(t, "cleanup-wait", "--endpoint", addr, "--interval", "20ms", "--rounds", "2", "--timeout", "1m")
	if err != nil {
		cancel()
		<-served
		t.Fatalf("cleanup-wait: %v\n%s\ncleanup:\n%s", err, out, cleanupOut.String())
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if !strings.Contains(cleanupOut.String(), "removed") {
		t.Errorf("cleanup printed no removal:\n%s", cleanupOut.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "ghcr.io", "hosts.toml")); !os.IsNotExist(err) {
		t.Errorf("ghcr.io/hosts.toml still there after cleanup: %v", err)
	}

	// Nothing answers at addr any more: a bounded failure naming the endpoint.
	out, err = run(t, "cleanup-wait", "--endpoint", addr, "--interval", "20ms", "--timeout", "300ms")
	if err == nil || !strings.Contains(err.Error(), "cleanup not confirmed on every node") || !strings.Contains(err.Error(), addr) {
		t.Errorf("wait with nothing listening: %v\n%s", err, out)
	}

	// --serve-for bounds the cleanup pod's life: it exits by itself, successfully.
	if out, err := run(t, "cleanup", "--config-path", dir, "--listen", "127.0.0.1:0", "--serve-for", "10ms"); err != nil ||
		!strings.Contains(out, "nothing") {
		t.Errorf("second cleanup: %v\n%s", err, out)
	}

	for _, bad := range [][]string{
		{"cleanup-wait"},
		{"cleanup-wait", "--endpoint", "no-port"},
		{"cleanup-wait", "--endpoint", addr, "--rounds", "0"},
		{"cleanup", "--config-path", dir, "--listen", "not an address"},
		{"cleanup", "--config-path", dir, "--serve-for", "-1s"},
	} {
		if out, err := run(t, bad...); err == nil {
			t.Errorf("%v accepted:\n%s", bad, out)
		}
	}
}
