package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/seed"
)

// `shoal seed` refuses what it cannot serve safely; --registry none means no origin.
func TestSeedConfig(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string // "" = accepted
	}{
		{[]string{"--registry", "none"}, ""},
		{[]string{"--listen", "0.0.0.0:5000"}, "needs --admin-token-file"},
		{[]string{"--listen", "0.0.0.0:5000", "--admin-token-file", tok}, ""},
		{[]string{"--p2p=false"}, "peer-to-peer"},
		{[]string{"--replicas", "0"}, "--replicas"},
		{[]string{"--registry", "none", "--registry", "https://ghcr.io"}, "cannot be combined"},
		{[]string{"--admin-token-file", filepath.Join(t.TempDir(), "missing")}, "--admin-token-file"},
		{[]string{"--p2p-listen", "/ip4/0.0.0.0/tcp/4001"}, "shoal swarm-key"},
	} {
		app := newApp()
		var cfg seed.Config
		for _, c := range app.Commands {
			if c.Name == "seed" {
				c.Action = func(c *cli.Context) error {
					var err error
					cfg, err = seedConfig(c)
					return err
				}
			}
		}
		err := app.Run(append([]string{"shoal", "seed", "--data-dir", t.TempDir(), "--p2p-listen", "/ip4/127.0.0.1/tcp/0"}, tc.args...))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: %v, want an error mentioning %q", tc.args, err, tc.want)
		case tc.want == "" && tc.args[0] == "--registry" && len(cfg.Agent.Registries) != 0:
			t.Errorf("--registry none gave registries %v", cfg.Agent.Registries)
		}
	}
}

// pin add, ls and rm against a running seed, with its token.
func TestPinCommands(t *testing.T) {
	o, err := devregistry.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	img, err := devregistry.Image([]int64{4000, 5000}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	ref := o.Host() + "/cli/app:v1"
	if err := devregistry.Push(ref, img); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := seed.New(seed.Config{Agent: agent.Config{DataDir: t.TempDir(), Registries: []string{o.URL()},
		AdminToken: "s3cret", P2P: &p2p.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	addr := ln.Addr().String()

	if out, err := run(t, "pin", "add", "--seed", addr, ref); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("pin add without the token: %v\n%s", err, out)
	}
	out, err := run(t, "pin", "add", "--seed", addr, "--admin-token-file", tok, "--replicas", "1", ref)
	if err != nil || !strings.Contains(out, "pinned "+ref+"@") || !strings.Contains(out, "resolved to") {
		t.Fatalf("pin add: %v\n%s", err, out)
	}
	out, err = run(t, "pin", "ls", "--seed", addr, "--admin-token-file", tok)
	if err != nil || !strings.Contains(out, ref) {
		t.Fatalf("pin ls: %v\n%s", err, out)
	}
	if out, err = run(t, "pin", "rm", "--seed", addr, "--admin-token-file", tok, ref); err != nil {
		t.Fatalf("pin rm: %v\n%s", err, out)
	}
	if out, err = run(t, "pin", "rm", "--seed", addr, "--admin-token-file", tok, ref); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("second pin rm: %v\n%s", err, out)
	}
	if out, err = run(t, "preheat", "--seed", addr, "--admin-token-file", tok, o.Host()+"/cli/missing:v1"); err == nil {
		t.Fatalf("preheat of a missing image succeeded:\n%s", out)
	}
}
