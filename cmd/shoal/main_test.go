package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/agent"
)

// run invokes the CLI in process and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.RunContext(context.Background(), append([]string{"shoal"}, args...))
	return out.String(), err
}

func TestIDIsStable(t *testing.T) {
	dir := t.TempDir()
	a, err := run(t, "id", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := run(t, "id", "--data-dir", dir)
	if a != b || !strings.HasPrefix(a, "12D3Koo") {
		t.Fatalf("id %q then %q", a, b)
	}
}

func TestSwarmKey(t *testing.T) {
	out, err := run(t, "swarm-key")
	if err != nil || !strings.HasPrefix(out, "/key/swarm/psk/1.0.0/\n/base16/\n") {
		t.Fatalf("%q %v", out, err)
	}
}

// Flags and SHOAL_* variables fill the agent's config; bad values are refused before anything starts.
func TestAgentConfig(t *testing.T) {
	key := filepath.Join(t.TempDir(), "swarm.key")
	out, _ := run(t, "swarm-key")
	os.WriteFile(key, []byte(out), 0o600)
	t.Setenv("SHOAL_TAG_TTL", "7s")
	t.Setenv("SHOAL_HOSTED_REGISTRY", "registry.site:5000")
	t.Setenv("SHOAL_METRICS_LISTEN", ":9090")
	var got []string
	app := configOnly(t, &got)
	err := app.Run([]string{"shoal", "agent", "--registry", "http://127.0.0.1:1", "--registry", "https://ghcr.io",
		"--registry", "docker.io=https://harbor.corp/dockerhub-proxy",
		"--swarm-key", key, "--max-store-size", "50GiB", "--bootstrap", "dns:shoal.example:4001", "--chunk-size", "1MiB"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "http://127.0.0.1:1 https://ghcr.io docker.io=https://harbor.corp/dockerhub-proxy 7s 127.0.0.1:5000 registry.site:5000 :9090" {
		t.Fatalf("config %v", got)
	}
	for _, bad := range [][]string{
		{"--log-level", "loud"},
		{"--log-format", "xml"},
		{"--max-store-size", "lots"},
		{"--chunk-size", "1000"},
		{"--chunk-size", "0"},
		{"--bootstrap", "not an address"},
		{"--swarm-key", filepath.Join(t.TempDir(), "missing")},
		{"--hosted-registry", "http://registry.local"},
		{"--hosted-registry", "registry.local/site"},
		{"--allow-peer", "not-a-peer-id"},
		{"--provider-records-per-peer", "0"},
		{"--max-coordinated-fetches", "0"},
		{"--node-wide-credentials", "ghcr.io"}, // without --docker-config: nothing to share
		{"--node-wide-credentials", "not a host/x", "--docker-config", "/dev/null"},
		{"--listen", "0.0.0.0:99999"},
		{"--listen", "127.0.0.1"},
		{"--listen", "bad host:5000"},
		{"--metrics-listen", ":99999"},
		{"--debug-listen", "127.0.0.1:-1"},
		{"--allowed-host", "https://seed.example"},
		{"--allowed-host", "seed.example:5000"},
		{"--tls-cert", "/dev/null"},                           // without --tls-key
		{"--tls-cert", "/dev/null", "--tls-key", "/dev/null"}, // not PEM
		{"--registry", "ftp://registry.example"},              // checked without --check-config too
		{"--tag-ttl", "-1s"},
	} {
		if err := configOnly(t, &got).Run(append([]string{"shoal", "agent", "--swarm-key", key}, bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// A peer listener beyond loopback needs a swarm key or an allowlist: any address that is not
// loopback (a wildcard, a routable address, one of several) makes the start fail, saying how to
// make a key; --allow-peer and SHOAL_ALLOW_PEER (a comma-separated list) set the allowlist.
func TestOpenPeerListenerRefused(t *testing.T) {
	key := filepath.Join(t.TempDir(), "swarm.key")
	out, _ := run(t, "swarm-key")
	os.WriteFile(key, []byte(out), 0o600)
	id1, _ := run(t, "id", "--data-dir", t.TempDir())
	id2, _ := run(t, "id", "--data-dir", t.TempDir())
	id1, id2 = strings.TrimSpace(id1), strings.TrimSpace(id2)
	for _, tc := range []struct {
		name  string
		args  []string
		env   string // SHOAL_ALLOW_PEER
		open  bool   // refused as open
		peers int    // allowlist length when accepted
	}{
		{name: "default listener", args: nil, open: true},
		{name: "ipv4 wildcard", args: []string{"--p2p-listen", "/ip4/0.0.0.0/tcp/4001"}, open: true},
		{name: "ipv6 wildcard", args: []string{"--p2p-listen", "/ip6/::/tcp/4001"}, open: true},
		{name: "routable address", args: []string{"--p2p-listen", "/ip4/10.1.2.3/tcp/4001"}, open: true},
		{name: "loopback and wildcard", args: []string{"--p2p-listen", "/ip4/127.0.0.1/tcp/4001", "--p2p-listen", "/ip4/0.0.0.0/tcp/4002"}, open: true},
		{name: "ipv4 loopback", args: []string{"--p2p-listen", "/ip4/127.0.0.1/tcp/4001"}},
		{name: "ipv6 loopback", args: []string{"--p2p-listen", "/ip6/::1/tcp/4001"}},
		{name: "no peer listener", args: []string{"--p2p=false"}},
		{name: "wildcard with swarm key", args: []string{"--swarm-key", key}},
		{name: "wildcard with allowlist", args: []string{"--allow-peer", id1, "--allow-peer", id2}, peers: 2},
		{name: "allowlist from the environment", env: id1 + "," + id2, peers: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SHOAL_ALLOW_PEER", tc.env)
			app := newApp()
			var cfg agent.Config
			for _, c := range app.Commands {
				if c.Name == "agent" {
					c.Action = func(c *cli.Context) (err error) { cfg, err = agentConfig(c, io.Discard); return err }
				}
			}
			err := app.Run(append([]string{"shoal", "agent", "--data-dir", t.TempDir()}, tc.args...))
			switch {
			case tc.open && (err == nil || !strings.Contains(err.Error(), "shoal swarm-key") || !strings.Contains(err.Error(), "--allow-peer")):
				t.Fatalf("err %v, want the refusal saying how to make a swarm key or an allowlist", err)
			case !tc.open && err != nil:
				t.Fatal(err)
			case !tc.open && cfg.P2P != nil && len(cfg.P2P.AllowPeers) != tc.peers:
				t.Fatalf("allowlist %v, want %d peers", cfg.P2P.AllowPeers, tc.peers)
			}
		})
	}
}

// configOnly is the CLI with the agent command replaced by one that only builds the config.
func configOnly(t *testing.T, got *[]string) *cli.App {
	app := newApp()
	for _, c := range app.Commands {
		if c.Name == "agent" {
			c.Action = func(c *cli.Context) error {
				cfg, err := agentConfig(c, nil)
				if err != nil {
					return err
				}
				*got = append(cfg.Registries, cfg.TagTTL.String(), cfg.Listen, cfg.HostedRegistry, cfg.MetricsListen)
				if cfg.P2P == nil || len(cfg.P2P.SwarmKey) == 0 || cfg.StoreMaxBytes != 50<<30 {
					t.Errorf("p2p %+v, max store %d", cfg.P2P, cfg.StoreMaxBytes)
				}
				if cfg.ChunkSize != 1<<20 && cfg.ChunkSize != 4<<20 {
					t.Errorf("chunk size %d", cfg.ChunkSize)
				}
				return nil
			}
		}
	}
	return app
}

// --check-config runs the real agent and seed commands up to their checked config and returns
// without starting a node: good arguments pass (nothing listens: port 1 is never bound), and a
// bad file is still refused.
func TestCheckConfig(t *testing.T) {
	key := filepath.Join(t.TempDir(), "swarm.key")
	out, _ := run(t, "swarm-key")
	os.WriteFile(key, []byte(out), 0o600)
	token := filepath.Join(t.TempDir(), "token")
	os.WriteFile(token, []byte("secret\n"), 0o600)
	authKey := filepath.Join(t.TempDir(), "seed-authority.key")
	pub, err := run(t, "seed-authority", "create", "--key", authKey)
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"--check-config", "--data-dir", t.TempDir(), "--swarm-key", key,
		"--listen", "127.0.0.1:1", "--p2p-listen", "/ip4/127.0.0.1/tcp/1", "--seed-authority", strings.TrimSpace(pub)}
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"agent", append([]string{"agent"}, common...), true},
		{"seed", append([]string{"seed", "--admin-token-file", token, "--seed-authority-key", authKey}, common...), true},
		{"seed without token off loopback", append(append([]string{"seed"}, common...), "--listen", "0.0.0.0:1"), false},
		{"agent with a missing key", append([]string{"agent"}, append(common, "--swarm-key", key+".missing")...), false},
		{"seed with a bad authority key", append([]string{"seed", "--seed-authority-key", token}, common...), false},
		{"agent with a registry that is no URL", append([]string{"agent", "--registry", "ftp://registry.example"}, common...), false},
		{"seed with one registry twice", append([]string{"seed", "--registry", "https://docker.io", "--registry", "https://registry-1.docker.io"}, common...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.args...)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v (output %q), want ok=%v", err, out, tc.ok)
			}
		})
	}
}
