package realclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/test/testutil"
)

// Attack 7, open by default: `shoal agent` and `shoal seed` processes listening for peers beyond
// loopback with neither a swarm key nor an allowlist exit at once, non-zero, saying how to make a
// key; with a swarm key the same listener starts.
func TestOpenPeerListenerRefusedByProcess(t *testing.T) {
	bin := shoal.Path(t)
	for _, command := range []string{"agent", "seed"} {
		t.Run(command, func(t *testing.T) {
			addr := testutil.FreeAddr(t)
			p := testutil.StartProcess(t, "shoal "+command, bin, []string{command, "--data-dir", t.TempDir(),
				"--listen", addr, "--registry", "http://127.0.0.1:1", "--p2p-listen", "/ip4/0.0.0.0/tcp/0"})
			// It must exit by itself; if it starts instead, the cleanup stops it.
			deadline := time.Now().Add(30 * time.Second)
			for exited := false; !exited; {
				select {
				case <-p.Done():
					exited = true
				case <-time.After(100 * time.Millisecond):
					if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
						resp.Body.Close()
						t.Fatalf("shoal %s started open on 0.0.0.0", command)
					}
					if time.Now().After(deadline) {
						t.Fatalf("shoal %s neither exited nor became ready in 30 s", command)
					}
				}
			}
			var exit *exec.ExitError
			if err := p.ExitErr(); !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("shoal %s exited with %v, want a non-zero status", command, err)
			}
			out := p.Output()
			for _, want := range []string{"/ip4/0.0.0.0/tcp/0", "shoal swarm-key", "--swarm-key", "--allow-peer"} {
				if !strings.Contains(out, want) {
					t.Errorf("the refusal does not mention %q:\n%s", want, out)
				}
			}
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key, err := testutil.Run(ctx, bin, "swarm-key")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "swarm.key")
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	// StartAgent fails the test unless the agent becomes ready, and stops it at the end.
	testutil.StartAgent(t, bin, []string{"http://127.0.0.1:1"}, "--p2p-listen", "/ip4/0.0.0.0/tcp/0", "--swarm-key", keyFile)
}

// --allow-peer end to end: node A admits only node B. B pulls a blob A holds with the origin gone;
// node C, not on A's list, joins through A and cannot fetch it.
func TestAllowPeerAdmitsOnlyListedPeers(t *testing.T) {
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o, err := devregistry.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	data := make([]byte, 3<<20)
	rand.Read(data)
	d := digest.FromBytes(data)
	resp, err := http.Post(fmt.Sprintf("%s/v2/test/allow/blobs/uploads/?digest=%s", o.URL(), d), "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	registries := []string{o.URL()}

	bListen := p2pAddr(t)
	b := testutil.StartAgent(t, bin, registries, "--p2p-listen", bListen)
	bID := status(ctx, t, b).PeerID
	aListen := p2pAddr(t)
	a := testutil.StartAgent(t, bin, registries, "--p2p-listen", aListen, "--allow-peer", bID, "--bootstrap", bListen+"/p2p/"+bID)
	waitUntil(ctx, t, "B to join A", func() bool { return len(status(ctx, t, b).ConnectedPeers) > 0 })
	c := testutil.StartAgent(t, bin, registries, "--p2p-listen", p2pAddr(t), "--bootstrap", aListen)

	get := func(n *testutil.Agent) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/v2/test/allow/blobs/"+d.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("status %d", resp.StatusCode)
		}
		return io.ReadAll(resp.Body)
	}
	if body, err := get(a); err != nil || !bytes.Equal(body, data) {
		t.Fatalf("pull through A: %v", err)
	}
	o.Close() // from now on the blob is only in the cluster
	waitUntil(ctx, t, "B to pull the blob from A", func() bool {
		body, err := get(b)
		return err == nil && bytes.Equal(body, data)
	})
	if body, err := get(c); err == nil || bytes.Equal(body, data) {
		t.Fatal("C, not on A's allowlist, fetched the blob")
	}
	if s := status(ctx, t, c); len(s.ConnectedPeers) != 0 {
		t.Fatalf("C is connected to %v", s.ConnectedPeers)
	}
	t.Logf("A %s admits B %s; C %s is refused", status(ctx, t, a).PeerID, bID, status(ctx, t, c).PeerID)
	if s := status(ctx, t, a); len(s.ConnectedPeers) != 1 || s.ConnectedPeers[0] != bID {
		t.Fatalf("A is connected to %v, want only B", s.ConnectedPeers)
	}
}
