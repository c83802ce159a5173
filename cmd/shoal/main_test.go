package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
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
	var got []string
	app := configOnly(t, &got)
	err := app.Run([]string{"shoal", "agent", "--registry", "http://127.0.0.1:1", "--registry", "https://ghcr.io",
		"--swarm-key", key, "--max-store-size", "50GiB", "--bootstrap", "dns:shoal.example:4001", "--chunk-size", "1MiB"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "http://127.0.0.1:1 https://ghcr.io 7s 127.0.0.1:5000" {
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
		{"--node-wide-credentials", "ghcr.io"}, // without --docker-config: nothing to share
		{"--node-wide-credentials", "not a host/x", "--docker-config", "/dev/null"},
	} {
		if err := configOnly(t, &got).Run(append([]string{"shoal", "agent"}, bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
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
				*got = append(cfg.Registries, cfg.TagTTL.String(), cfg.Listen)
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
