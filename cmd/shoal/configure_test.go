package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// configure takes the agent and the registries from SHOAL_* variables, as an init container
// given the agent's environment would, in the agent's own --registry forms.
func TestConfigureFromEnvironment(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs.d")
	t.Setenv("SHOAL_AGENT", "http://127.0.0.1:5055")
	t.Setenv("SHOAL_REGISTRY", "docker.io=https://harbor.corp,http://127.0.0.1:5001")
	t.Setenv("SHOAL_CONTAINERD_CONFIG_PATH", dir)
	out, err := run(t, "configure", "containerd")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"docker.io/hosts.toml", "127.0.0.1:5001/hosts.toml"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "docker.io", "hosts.toml"))
	if err != nil || !strings.Contains(string(b), `server = "https://registry-1.docker.io"`) || !strings.Contains(string(b), `[host."http://127.0.0.1:5055"]`) {
		t.Errorf("docker.io/hosts.toml: %v\n%s", err, b)
	}
	if out, err := run(t, "configure", "containerd", "--remove"); err != nil || !strings.Contains(out, "removed") {
		t.Errorf("--remove: %v\n%s", err, out)
	}
	for _, bad := range [][]string{
		{"configure", "containerd", "--agent", "127.0.0.1:5000"},
		{"configure", "containerd", "--registry", "not a registry"},
		{"configure", "crio", "--agent", "http://127.0.0.1:5000/v2"},
		{"doctor", "--registry", "none", "--registry", "ghcr.io"},
	} {
		if _, err := run(t, bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestDoctorExitsNonZeroOnProblems(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte("version = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "doctor", "--containerd-config", cfg, "--agent", "http://127.0.0.1:1")
	if err == nil {
		t.Fatalf("doctor passed a node without config_path or agent:\n%s", out)
	}
	for _, want := range []string{"PROBLEM config_path is not set", `[plugins."io.containerd.grpc.v1.cri".registry]`, "PROBLEM the agent does not answer"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
