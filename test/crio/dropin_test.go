// Package crio checks Shoal's registries.conf.d drop-in with CRI-O's own parser,
// containers/image's sysregistriesv2, which CRI-O, podman, skopeo and buildah share. It is a
// module of its own so that containers/image stays out of Shoal's go.mod.
package crio

import (
	"os"
	"path/filepath"
	"testing"

	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"

	"github.com/shoal-oci/shoal/runtimeconf"
	"github.com/shoal-oci/shoal/runtimeconf/crio"
)

// TestDropInMakesTheAgentFirst writes registries.conf, an operator's drop-in and Shoal's drop-in
// the way `shoal configure crio` does, then asks sysregistriesv2 for the pull sources of images in
// each registry: the agent's path-prefixed mirror must come first, then the operator's mirrors,
// then the registry itself.
func TestDropInMakesTheAgentFirst(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "registries.conf")
	dropins := filepath.Join(dir, "registries.conf.d")
	write(t, main, `unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "quay.io"
location = "quay.io"

[[registry.mirror]]
location = "mirror.corp/quay"
`)
	write(t, filepath.Join(dropins, "10-corp.conf"), `[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "hub-cache.corp"
`)
	agent, err := runtimeconf.ParseAgent("http://127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	regs, err := runtimeconf.ParseRegistries([]string{"docker.io", "quay.io", "http://127.0.0.1:5001"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crio.Configure(crio.Options{Dir: dropins, MainConfig: main, Agent: agent, Registries: regs}); err != nil {
		t.Fatal(err)
	}
	sys := &types.SystemContext{SystemRegistriesConfPath: main, SystemRegistriesConfDirPath: dropins}
	sysregistriesv2.InvalidateCache()
	tests := []struct {
		ref  string
		want []string // pull sources in order: location (insecure if http)
	}{
		{"docker.io/library/alpine:3", []string{"127.0.0.1:5000/docker.io/library/alpine insecure", "hub-cache.corp/library/alpine", "docker.io/library/alpine"}},
		{"quay.io/team/app:v1", []string{"127.0.0.1:5000/quay.io/team/app insecure", "mirror.corp/quay/team/app", "quay.io/team/app"}},
		{"127.0.0.1:5001/test/app:v1", []string{"127.0.0.1:5000/127.0.0.1_5001/test/app insecure", "127.0.0.1:5001/test/app insecure"}},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			reg, err := sysregistriesv2.FindRegistry(sys, tt.ref)
			if err != nil || reg == nil {
				t.Fatalf("FindRegistry(%s): %v, %v", tt.ref, reg, err)
			}
			named, err := parseNamed(tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			srcs, err := reg.PullSourcesFromReference(named)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range srcs {
				e := s.Reference.Name()
				if s.Endpoint.Insecure {
					e += " insecure"
				}
				got = append(got, e)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("pull sources %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("pull source %d is %q, want %q (all: %v)", i, got[i], tt.want[i], got)
				}
			}
		})
	}

	// --remove takes Shoal's entries away and leaves the operator's in force.
	if _, err := crio.Remove(dropins); err != nil {
		t.Fatal(err)
	}
	sysregistriesv2.InvalidateCache()
	reg, err := sysregistriesv2.FindRegistry(sys, "docker.io/library/alpine:3")
	if err != nil || reg == nil || len(reg.Mirrors) != 1 || reg.Mirrors[0].Location != "hub-cache.corp" {
		t.Errorf("after --remove docker.io is %+v (%v), want the operator's mirror alone", reg, err)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
