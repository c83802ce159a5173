package crio

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/shoal-oci/shoal/runtimeconf"
)

func setup(t *testing.T, main string, dropins map[string]string) Options {
	t.Helper()
	dir := t.TempDir()
	o := Options{Dir: filepath.Join(dir, "registries.conf.d"), MainConfig: filepath.Join(dir, "registries.conf")}
	if main != "" {
		if err := os.WriteFile(o.MainConfig, []byte(main), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, c := range dropins {
		if err := os.WriteFile(filepath.Join(o.Dir, name), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u, err := runtimeconf.ParseAgent("http://127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	o.Agent = u
	regs, err := runtimeconf.ParseRegistries([]string{"docker.io", "http://127.0.0.1:5001", "quay.io"})
	if err != nil {
		t.Fatal(err)
	}
	o.Registries = regs
	return o
}

func readDropIn(t *testing.T, o Options) map[string]registry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(o.Dir, DropInName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "# Written by `shoal configure crio`") {
		t.Errorf("no marker:\n%s", b)
	}
	var c registriesConf
	if err := toml.Unmarshal(b, &c); err != nil {
		t.Fatalf("drop-in does not parse: %v\n%s", err, b)
	}
	out := map[string]registry{}
	for _, r := range c.Registries {
		out[r.Prefix] = r
	}
	return out
}

func TestConfigureWritesPathPrefixedMirrors(t *testing.T) {
	main := `unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "quay.io"
location = "quay.io"
mirror-by-digest-only = false

[[registry.mirror]]
location = "mirror.corp/quay"
`
	o := setup(t, main, map[string]string{"10-corp.conf": "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"hub-cache.corp\"\npull-from-mirror = \"digest-only\"\n"})
	changes, err := Configure(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Action != runtimeconf.Wrote {
		t.Errorf("changes %v", changes)
	}
	got := readDropIn(t, o)
	for _, tt := range []struct {
		prefix, location string
		insecure         bool
		mirrors          []string
	}{
		{"docker.io", "docker.io", false, []string{"127.0.0.1:5000/docker.io", "hub-cache.corp"}},
		{"127.0.0.1:5001", "127.0.0.1:5001", true, []string{"127.0.0.1:5000/127.0.0.1_5001"}},
		{"quay.io", "quay.io", false, []string{"127.0.0.1:5000/quay.io", "mirror.corp/quay"}},
	} {
		r, ok := got[tt.prefix]
		if !ok {
			t.Errorf("no entry for %s", tt.prefix)
			continue
		}
		var ms []string
		for _, m := range r.Mirrors {
			ms = append(ms, m.Location)
		}
		if r.Location != tt.location || r.Insecure != tt.insecure || strings.Join(ms, ",") != strings.Join(tt.mirrors, ",") {
			t.Errorf("%s: %+v, want location %s insecure %t mirrors %v", tt.prefix, r, tt.location, tt.insecure, tt.mirrors)
		}
		if !r.Mirrors[0].Insecure {
			t.Errorf("%s: the agent's mirror is not marked insecure (it speaks http)", tt.prefix)
		}
	}
	if got["docker.io"].Mirrors[1].PullFromMirror != "digest-only" {
		t.Errorf("the kept mirror lost its pull-from-mirror: %+v", got["docker.io"].Mirrors[1])
	}
	before, _ := os.ReadFile(filepath.Join(o.Dir, DropInName))
	changes, err = Configure(o)
	if err != nil || len(changes) != 1 || changes[0].Action != runtimeconf.Unchanged {
		t.Errorf("second configure: %v %v", changes, err)
	}
	after, _ := os.ReadFile(filepath.Join(o.Dir, DropInName))
	if string(before) != string(after) {
		t.Error("second configure changed the drop-in")
	}
	changes, err = Remove(o.Dir)
	if err != nil || len(changes) != 1 || changes[0].Action != runtimeconf.Removed {
		t.Fatalf("remove: %v %v", changes, err)
	}
	if _, err := os.Stat(filepath.Join(o.Dir, DropInName)); !os.IsNotExist(err) {
		t.Errorf("drop-in still there: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(o.Dir, "10-corp.conf")); !strings.Contains(string(b), "hub-cache.corp") {
		t.Error("someone else's drop-in changed")
	}
	changes, err = Remove(o.Dir)
	if err != nil || len(changes) != 1 || changes[0].Action != runtimeconf.Nothing {
		t.Errorf("remove with nothing to remove: %v %v", changes, err)
	}
}

func TestConfigureBadInput(t *testing.T) {
	t.Run("malformed registries.conf", func(t *testing.T) {
		o := setup(t, "[[registry]\nprefix = \"docker.io\"\n", nil)
		if _, err := Configure(o); err == nil || !strings.Contains(err.Error(), o.MainConfig) {
			t.Errorf("error %v does not name %s", err, o.MainConfig)
		}
		if _, err := os.Stat(filepath.Join(o.Dir, DropInName)); !os.IsNotExist(err) {
			t.Error("a drop-in was written")
		}
	})
	t.Run("someone else's file of that name", func(t *testing.T) {
		o := setup(t, "", map[string]string{DropInName: "[[registry]]\nlocation = \"x.io\"\n"})
		if _, err := Configure(o); err == nil || !strings.Contains(err.Error(), "not written by Shoal") {
			t.Errorf("error %v", err)
		}
		changes, err := Remove(o.Dir)
		if err != nil || changes[0].Action != runtimeconf.Nothing {
			t.Errorf("remove touched someone else's file: %v %v", changes, err)
		}
	})
	t.Run("a later drop-in overrides Shoal's", func(t *testing.T) {
		o := setup(t, "", map[string]string{"zz-late.conf": "[[registry]]\nprefix = \"quay.io\"\nlocation = \"quay.io\"\n"})
		changes, err := Configure(o)
		if err != nil {
			t.Fatal(err)
		}
		if len(changes) != 2 || changes[1].Action != runtimeconf.Warning || !strings.Contains(changes[1].Note, "quay.io") {
			t.Errorf("no warning about zz-late.conf: %v", changes)
		}
	})
	t.Run("unwritable directory", func(t *testing.T) {
		o := setup(t, "", nil)
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		o.Dir = filepath.Join(file, "registries.conf.d") // under a regular file: even root cannot
		if _, err := Configure(o); err == nil || !strings.Contains(err.Error(), o.Dir) || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("error %v", err)
		}
	})
}
