package containerd

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-oci/shoal/runtimeconf"
)

func TestDoctor(t *testing.T) {
	good := "# Written by shoal\n[host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	tests := []struct {
		name   string
		config string // DIR is the config path directory
		hosts  map[string]string
		want   []string // substrings of problems, in order; none: no problem
	}{
		{name: "version 2, configured",
			config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"DIR\"\n",
			hosts:  map[string]string{"docker.io": good}},
		{name: "version 3, configured",
			config: "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"DIR\"\n",
			hosts:  map[string]string{"docker.io": good}},
		{name: "version 4 through _default",
			config: "version = 4\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = \"DIR\"\n",
			hosts:  map[string]string{"_default": good}},
		{name: "version 2, config_path unset",
			config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause\"\n",
			want:   []string{"config_path is not set"}},
		{name: "version 3, no plugin section at all",
			config: "version = 3\n",
			want:   []string{"config_path is not set"}},
		{name: "version 3, colon-separated config_path",
			config: "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"DIR:/etc/docker/certs.d\"\n",
			hosts:  map[string]string{"docker.io": good},
			want:   []string{"is colon-separated: containerd 2.x's transfer service, which the CRI pulls with by default, ignores such a path and pulls from the registries directly (containerd issue 12415)"}},
		{name: "version 3, colon-separated config_path with local pull",
			config: "version = 3\n[plugins.\"io.containerd.cri.v1.images\"]\n  use_local_image_pull = true\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"DIR:/etc/docker/certs.d\"\n",
			hosts:  map[string]string{"docker.io": good}},
		{name: "version 2, colon-separated config_path",
			config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"DIR:/etc/docker/certs.d\"\n",
			hosts:  map[string]string{"docker.io": good},
			want:   []string{"containerd 2.x's transfer service ignores"}},
		{name: "version 2, legacy mirrors",
			config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"http://127.0.0.1:5000\"]\n",
			want:   []string{`legacy registry "mirrors"`, "config_path is not set"}},
		{name: "version 3, registry under the version 2 plugin ID",
			config: "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"DIR\"\n",
			want:   []string{`"io.containerd.grpc.v1.cri" are ignored with config version 3`, "config_path is not set"}},
		{name: "version 2, registry under the version 3 plugin ID",
			config: "version = 2\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"DIR\"\n",
			hosts:  map[string]string{"docker.io": good},
			want:   []string{"containerd 1.x ignores in a version 2 config"}},
		{name: "version 1",
			config: "[plugins.cri.registry]\n  config_path = \"DIR\"\n",
			hosts:  map[string]string{"docker.io": good},
			want:   []string{"config version 1"}},
		{name: "no hosts.toml for the registry",
			config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"DIR\"\n",
			want:   []string{"no hosts.toml for docker.io"}},
		{name: "malformed hosts.toml",
			config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"DIR\"\n",
			hosts:  map[string]string{"docker.io": "server = \"https://x\n"},
			want:   []string{"is not valid (containerd ignores it"}},
		{name: "agent not first",
			config: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"DIR\"\n",
			hosts:  map[string]string{"docker.io": "[host.\"https://mirror.corp\"]\n[host.\"http://127.0.0.1:5000\"]\n"},
			want:   []string{"does not name the agent"}},
		{name: "not TOML",
			config: "version = = 2\n",
			want:   []string{"not valid TOML"}},
		{name: "unknown version",
			config: "version = 9\n",
			want:   []string{"config version 9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certs := filepath.Join(dir, "certs.d")
			for h, content := range tt.hosts {
				writeFile(t, filepath.Join(certs, h, "hosts.toml"), content)
			}
			cfg := filepath.Join(dir, "config.toml")
			writeFile(t, cfg, strings.ReplaceAll(tt.config, "DIR", certs))
			fs := Check(DoctorOptions{ConfigFile: cfg, ConfigPath: "/etc/containerd/certs.d", Agent: agentURL, Registries: regs(t, "docker.io")})
			var problems []runtimeconf.Finding
			for _, f := range fs {
				if f.Problem {
					problems = append(problems, f)
				}
			}
			var out strings.Builder
			runtimeconf.WriteFindings(&out, fs)
			if len(problems) != len(tt.want) {
				t.Fatalf("%d problems, want %d:\n%s", len(problems), len(tt.want), out.String())
			}
			for i, w := range tt.want {
				if !strings.Contains(problems[i].Summary, w) {
					t.Errorf("problem %d %q does not say %q", i, problems[i].Summary, w)
				}
				if problems[i].Fix == "" {
					t.Errorf("problem %q has no fix", problems[i].Summary)
				}
			}
		})
	}
}

func TestDoctorPrintsTheSnippetForTheVersion(t *testing.T) {
	for _, tt := range []struct {
		version int
		want    string
	}{
		{2, `[plugins."io.containerd.grpc.v1.cri".registry]`},
		{3, `[plugins."io.containerd.cri.v1.images".registry]`},
	} {
		cfg := filepath.Join(t.TempDir(), "config.toml")
		writeFile(t, cfg, fmt.Sprintf("version = %d\n", tt.version))
		fs := Check(DoctorOptions{ConfigFile: cfg, ConfigPath: "/etc/containerd/certs.d", Agent: agentURL})
		var out strings.Builder
		if n := runtimeconf.WriteFindings(&out, fs); n != 1 {
			t.Fatalf("version %d: %d problems:\n%s", tt.version, n, out.String())
		}
		for _, w := range []string{tt.want, `config_path = "/etc/containerd/certs.d"`, "restart containerd"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("version %d: output lacks %q:\n%s", tt.version, w, out.String())
			}
		}
	}
	fs := Check(DoctorOptions{ConfigFile: filepath.Join(t.TempDir(), "missing.toml"), Agent: agentURL})
	if len(fs) != 1 || !fs[0].Problem || !strings.Contains(fs[0].Summary, "does not exist") {
		t.Errorf("missing config: %+v", fs)
	}
}

func TestDoctorAcceptsWhatConfigureWrites(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs.d")
	writeFile(t, filepath.Join(certs, "ghcr.io", "hosts.toml"), operatorHosts)
	r := regs(t, "docker.io", "ghcr.io", "http://127.0.0.1:5001")
	if _, err := Configure(Options{ConfigPath: certs, Agent: agentURL, Registries: r}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.toml")
	writeFile(t, cfg, fmt.Sprintf("version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = %q\n", certs))
	var out strings.Builder
	if n := runtimeconf.WriteFindings(&out, Check(DoctorOptions{ConfigFile: cfg, Agent: agentURL, Registries: r})); n != 0 {
		t.Errorf("doctor finds problems with configure's files:\n%s", out.String())
	}
}
