package realclient

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
)

// TestBadFlagsHaveNoSideEffects runs the real binary, as agent and as seed, with one bad flag
// each (or a --listen port in use): it exits with an error naming the flag, and has created
// nothing (its data directory does not exist) and opened no port. The peer listener is given a
// port the test holds: a node that tried to open it before checking its flags would fail there
// instead ("address already in use"), and the error would not name the bad flag.
func TestBadFlagsHaveNoSideEffects(t *testing.T) {
	bin := shoal.Path(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldPort := held.Addr().(*net.TCPAddr).Port
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name string
		args []string
		flag string // what the error must name
	}{
		{"port out of range", []string{"--listen", "0.0.0.0:99999"}, "--listen"},
		{"listen port in use", []string{"--listen", held.Addr().String()}, "--listen"},
		{"metrics port out of range", []string{"--metrics-listen", "127.0.0.1:70000"}, "--metrics-listen"},
		{"debug address without port", []string{"--debug-listen", "127.0.0.1"}, "--debug-listen"},
		{"certificate file missing", []string{"--tls-cert", missing, "--tls-key", missing}, "--tls-cert"},
		{"key without certificate", []string{"--tls-key", missing}, "--tls-cert"},
		{"allowed host with a scheme", []string{"--allowed-host", "https://seed.example"}, "--allowed-host"},
		{"registry with a bad scheme", []string{"--registry", "ftp://registry.example"}, "--registry"},
		{"negative tag TTL", []string{"--tag-ttl", "-5s"}, "--tag-ttl"},
	} {
		for _, command := range []string{"agent", "seed"} {
			t.Run(command+"/"+tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				dataDir := filepath.Join(t.TempDir(), "data")
				args := []string{command, "--data-dir", dataDir, "--listen", testutil.FreeAddr(t),
					"--p2p-listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", heldPort)}
				if !strings.HasPrefix(tc.args[0], "--registry") {
					args = append(args, "--registry", "none")
				}
				out, err := testutil.Run(ctx, bin, append(args, tc.args...)...)
				if err == nil {
					t.Fatalf("shoal %s %v started:\n%s", command, tc.args, out)
				}
				if ctx.Err() != nil {
					t.Fatalf("shoal %s %v did not exit: %s", command, tc.args, out)
				}
				if !strings.Contains(out, tc.flag) {
					t.Errorf("the error does not name %s:\n%s", tc.flag, out)
				}
				if tc.name != "listen port in use" && strings.Contains(out, "address already in use") {
					t.Errorf("the node opened a port before checking its flags:\n%s", out)
				}
				if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
					t.Errorf("the data directory was created (%v):\n%s", err, out)
				}
			})
		}
	}
}
