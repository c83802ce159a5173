package containerd

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/shoal-oci/shoal/runtimeconf"
)

var agentURL = mustAgent("http://127.0.0.1:5000")

func mustAgent(s string) *url.URL {
	u, err := runtimeconf.ParseAgent(s)
	if err != nil {
		panic(err)
	}
	return u
}

func regs(t *testing.T, list ...string) []runtimeconf.Registry {
	t.Helper()
	r, err := runtimeconf.ParseRegistries(list)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
}

// hostsOf parses a written hosts.toml as containerd does and returns its hosts in order and
// its server.
func hostsOf(t *testing.T, path string) ([]string, hostsFile) {
	t.Helper()
	ph, err := parseHosts([]byte(readFile(t, path)))
	if err != nil {
		t.Fatalf("%s does not parse: %v", path, err)
	}
	return ph.order, ph.file
}

func actions(cs []runtimeconf.Change) string {
	var s []string
	for _, c := range cs {
		s = append(s, string(c.Action)+" "+filepath.Base(filepath.Dir(c.Path)))
	}
	return strings.Join(s, "; ")
}

func TestConfigureFreshDirectory(t *testing.T) {
	root := filepath.Join(t.TempDir(), "certs.d")
	o := Options{ConfigPath: root, Agent: agentURL, Registries: regs(t, "docker.io", "http://127.0.0.1:5001", "ghcr.io"), Default: true}
	changes, err := Configure(o)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := actions(changes), "wrote docker.io; wrote 127.0.0.1:5001; wrote ghcr.io; wrote _default"; got != want {
		t.Errorf("changes %q, want %q", got, want)
	}
	for _, tt := range []struct{ dir, server string }{
		{"docker.io", "https://registry-1.docker.io"},
		{"127.0.0.1:5001", "http://127.0.0.1:5001"},
		{"ghcr.io", "https://ghcr.io"},
		{"_default", ""}, // containerd falls back to the image's own registry
	} {
		order, f := hostsOf(t, filepath.Join(root, tt.dir, "hosts.toml"))
		if len(order) != 1 || order[0] != "http://127.0.0.1:5000" {
			t.Errorf("%s: hosts %v, want the agent alone", tt.dir, order)
		}
		if f.Server != tt.server {
			t.Errorf("%s: server %q, want %q", tt.dir, f.Server, tt.server)
		}
		if got := f.Hosts["http://127.0.0.1:5000"].Capabilities; strings.Join(got, ",") != "pull,resolve" {
			t.Errorf("%s: capabilities %v", tt.dir, got)
		}
	}
	before := snapshot(t, root)
	again, err := Configure(o)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := actions(again), "unchanged docker.io; unchanged 127.0.0.1:5001; unchanged ghcr.io; unchanged _default"; got != want {
		t.Errorf("second configure: %q, want %q", got, want)
	}
	if after := snapshot(t, root); after != before {
		t.Errorf("second configure changed the tree:\n%s\nwas\n%s", after, before)
	}
	removed, err := Remove(root)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := actions(removed), "removed 127.0.0.1:5001; removed _default; removed docker.io; removed ghcr.io"; got != want {
		t.Errorf("remove: %q, want %q", got, want)
	}
	if got := snapshot(t, root); got != "" {
		t.Errorf("after remove the config path holds:\n%s", got)
	}
}

// snapshot lists every file under root with its content and mode.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if info.IsDir() {
			if rel != "." {
				b.WriteString("dir " + rel + "\n")
			}
			return nil
		}
		c, err := os.ReadFile(path)
		b.WriteString(info.Mode().String() + " " + rel + "\n" + string(c) + "\n")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

const operatorHosts = `# Docker Hub through the corporate proxy first
server = "https://registry-1.docker.io"
ca = "hub-ca.crt"

# the corporate mirror, with its own CA and a token
[host."https://mirror.corp"]
  capabilities = ["pull", "resolve"]
  ca = "mirror-ca.crt"
  [host."https://mirror.corp".header]
    X-Token = ["abc"]

# the agent, configured by hand from an older README
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]

[host."https://backup.corp"]
  capabilities = ["pull"]
`

func TestConfigureKeepsOperatorHostsAndRestoresThem(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "docker.io")
	writeFile(t, filepath.Join(dir, "hosts.toml"), operatorHosts)
	writeFile(t, filepath.Join(dir, "hub-ca.crt"), "CA")
	writeFile(t, filepath.Join(dir, "mirror-ca.crt"), "CA2")
	before := snapshot(t, root)

	o := Options{ConfigPath: root, Agent: agentURL, Registries: regs(t, "docker.io")}
	if _, err := Configure(o); err != nil {
		t.Fatal(err)
	}
	order, f := hostsOf(t, filepath.Join(dir, "hosts.toml"))
	if want := "http://127.0.0.1:5000,https://mirror.corp,https://backup.corp"; strings.Join(order, ",") != want {
		t.Errorf("hosts in order %v, want %s (the agent first, once, then the operator's)", order, want)
	}
	if f.CA != "hub-ca.crt" || f.Server != "https://registry-1.docker.io" {
		t.Errorf("server settings lost: server %q ca %v", f.Server, f.CA)
	}
	if f.Hosts["https://mirror.corp"].CA != "mirror-ca.crt" {
		t.Errorf("mirror's CA lost: %+v", f.Hosts["https://mirror.corp"])
	}
	written := readFile(t, filepath.Join(dir, "hosts.toml"))
	for _, s := range []string{`X-Token = ["abc"]`, "# the corporate mirror, with its own CA and a token\n[host.\"https://mirror.corp\"]"} {
		if !strings.Contains(written, s) {
			t.Errorf("written file lacks %q:\n%s", s, written)
		}
	}
	if got := readFile(t, filepath.Join(dir, "hosts.toml.before-shoal")); got != operatorHosts {
		t.Errorf("saved file differs from the operator's:\n%s", got)
	}
	if st, _ := os.Stat(filepath.Join(dir, "hosts.toml")); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the operator's 0640", st.Mode().Perm())
	}
	// Idempotent, and a changed agent address replaces Shoal's host rather than adding one.
	if c, err := Configure(o); err != nil || actions(c) != "unchanged docker.io" {
		t.Fatalf("second configure: %v %v", actions(c), err)
	}
	o.Agent = mustAgent("http://127.0.0.1:5055")
	if _, err := Configure(o); err != nil {
		t.Fatal(err)
	}
	order, _ = hostsOf(t, filepath.Join(dir, "hosts.toml"))
	if want := "http://127.0.0.1:5055,https://mirror.corp,http://127.0.0.1:5000,https://backup.corp"; strings.Join(order, ",") != want {
		t.Errorf("after the agent moved, hosts %v, want %s", order, want)
	}
	if got := readFile(t, filepath.Join(dir, "hosts.toml.before-shoal")); got != operatorHosts {
		t.Errorf("saved file changed by a second configure:\n%s", got)
	}

	changes, err := Remove(root)
	if err != nil {
		t.Fatal(err)
	}
	if actions(changes) != "restored docker.io" {
		t.Errorf("remove: %s", actions(changes))
	}
	if after := snapshot(t, root); after != before {
		t.Errorf("remove did not restore exactly what was there:\n%s\nwant\n%s", after, before)
	}
}

func TestConfigureLegacyCertificates(t *testing.T) {
	// A Docker-style certs directory: containerd reads these files by name only while there is
	// no hosts.toml, so Shoal's file must name them.
	root := t.TempDir()
	dir := filepath.Join(root, "registry.corp:5000")
	writeFile(t, filepath.Join(dir, "ca.crt"), "CA")
	writeFile(t, filepath.Join(dir, "client.cert"), "CERT")
	writeFile(t, filepath.Join(dir, "client.key"), "KEY")
	before := snapshot(t, root)
	if _, err := Configure(Options{ConfigPath: root, Agent: agentURL, Registries: regs(t, "registry.corp:5000")}); err != nil {
		t.Fatal(err)
	}
	_, f := hostsOf(t, filepath.Join(dir, "hosts.toml"))
	if f.Server != "https://registry.corp:5000" {
		t.Errorf("server %q", f.Server)
	}
	if got := strings.TrimSpace(strings.ReplaceAll(strings.Join(toStrings(f.CA), ","), " ", "")); got != "ca.crt" {
		t.Errorf("ca %v, want ca.crt", f.CA)
	}
	if !strings.Contains(readFile(t, filepath.Join(dir, "hosts.toml")), `client = [["client.cert", "client.key"]]`) {
		t.Errorf("client pair not named:\n%s", readFile(t, filepath.Join(dir, "hosts.toml")))
	}
	if _, err := Remove(root); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, root); after != before {
		t.Errorf("remove left:\n%s\nwant\n%s", after, before)
	}
}

func toStrings(v any) []string {
	var out []string
	switch x := v.(type) {
	case string:
		out = append(out, x)
	case []any:
		for _, e := range x {
			out = append(out, e.(string))
		}
	}
	return out
}

func TestConfigureMalformedHostsWritesNothing(t *testing.T) {
	for _, tt := range []struct{ name, content, want string }{
		{"unterminated string", "server = \"https://registry-1.docker.io\n", "line 1"},
		{"duplicate table", "[host.\"https://a\"]\n[host.\"https://a\"]\n", "line 2"},
		{"wrong type", "server = 5\n", "line 1, column 10"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, "ghcr.io", "hosts.toml"), tt.content)
			before := snapshot(t, root)
			_, err := Configure(Options{ConfigPath: root, Agent: agentURL, Registries: regs(t, "docker.io", "ghcr.io")})
			if err == nil {
				t.Fatal("configure accepted a malformed hosts.toml")
			}
			if !strings.Contains(err.Error(), filepath.Join(root, "ghcr.io", "hosts.toml")) || !strings.Contains(err.Error(), "not a valid hosts.toml") ||
				!strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not name the file and the place: %v", err)
			}
			if after := snapshot(t, root); after != before {
				t.Errorf("something was written:\n%s", after)
			}
		})
	}
}

func TestConfigureUnwritableDirectory(t *testing.T) {
	root := t.TempDir()
	ro := filepath.Join(root, "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// Root ignores permission bits: a read-only mount is what stops it.
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro).CombinedOutput(); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("mount: %v %s", err, out)
			}
			t.Skipf("cannot mount a read-only tmpfs: %v %s", err, out)
		}
		t.Cleanup(func() { _ = syscall.Unmount(ro, syscall.MNT_DETACH) })
	} else {
		if err := os.Chmod(ro, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	for _, root := range []string{ro, filepath.Join(ro, "certs.d")} {
		_, err := Configure(Options{ConfigPath: root, Agent: agentURL, Registries: regs(t, "docker.io")})
		if err == nil {
			t.Fatalf("configure under %s succeeded", root)
		}
		if !strings.Contains(err.Error(), root) || !strings.Contains(err.Error(), "read-only") && !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("error does not say where and why: %v", err)
		}
	}
	entries, _ := os.ReadDir(ro)
	if len(entries) != 0 {
		t.Errorf("left %v behind", entries)
	}
}

func TestRemoveWithNothingToRestore(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "quay.io", "hosts.toml"), "server = \"https://quay.io\"\n")
	for _, dir := range []string{root, filepath.Join(root, "missing")} {
		changes, err := Remove(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(changes) != 1 || changes[0].Action != runtimeconf.Nothing {
			t.Errorf("remove in %s: %v", dir, changes)
		}
	}
	if got := readFile(t, filepath.Join(root, "quay.io", "hosts.toml")); got != "server = \"https://quay.io\"\n" {
		t.Errorf("someone else's file changed: %q", got)
	}
}

func TestConfigureRestoresRegistriesNoLongerListed(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "ghcr.io", "hosts.toml"), "server = \"https://ghcr.io\"\n")
	if _, err := Configure(Options{ConfigPath: root, Agent: agentURL, Registries: regs(t, "docker.io", "ghcr.io")}); err != nil {
		t.Fatal(err)
	}
	changes, err := Configure(Options{ConfigPath: root, Agent: agentURL, Registries: regs(t, "docker.io")})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := actions(changes), "unchanged docker.io; restored ghcr.io"; got != want {
		t.Errorf("changes %q, want %q", got, want)
	}
	if got := readFile(t, filepath.Join(root, "ghcr.io", "hosts.toml")); got != "server = \"https://ghcr.io\"\n" {
		t.Errorf("ghcr.io not restored: %q", got)
	}
}

func TestConfigureMissingBackupIsAnError(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "docker.io", "hosts.toml"), "server = \"https://registry-1.docker.io\"\n")
	o := Options{ConfigPath: root, Agent: agentURL, Registries: regs(t, "docker.io")}
	if _, err := Configure(o); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "docker.io", "hosts.toml.before-shoal")); err != nil {
		t.Fatal(err)
	}
	if _, err := Configure(o); err == nil || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("configure with Shoal's file but no saved original: %v", err)
	}
}

func TestConfigureUsesContainerdsPortDirectory(t *testing.T) {
	// containerd reads registry.corp_5000_/ before registry.corp:5000/: an existing one is where
	// Shoal's file must go.
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "registry.corp_5000_", "hosts.toml"), "server = \"https://registry.corp:5000\"\n")
	if _, err := Configure(Options{ConfigPath: root, Agent: agentURL, Registries: regs(t, "registry.corp:5000")}); err != nil {
		t.Fatal(err)
	}
	order, _ := hostsOf(t, filepath.Join(root, "registry.corp_5000_", "hosts.toml"))
	if len(order) != 1 || order[0] != agentURL.String() {
		t.Errorf("hosts %v", order)
	}
	if _, err := os.Stat(filepath.Join(root, "registry.corp:5000")); !os.IsNotExist(err) {
		t.Errorf("wrote a second directory containerd would not read: %v", err)
	}
}

// On uninstall the agent's preStop and the post-delete cleanup pod may both run Remove on one
// node at once: whichever restores a file first wins, and the other finds nothing of Shoal's left
// there, which is not an error. Each round races two Removes over files with and without the
// operator's own file before Shoal's.
func TestConcurrentRemove(t *testing.T) {
	var list []string
	for i := range 24 {
		list = append(list, "registry"+strconv.Itoa(i)+".example")
	}
	for round := range 20 {
		dir := filepath.Join(t.TempDir(), "certs.d")
		for i, r := range list {
			if i%2 == 0 {
				writeFile(t, filepath.Join(dir, r, hostsName), "server = \"https://"+r+"\"\n")
			}
		}
		if _, err := Configure(Options{ConfigPath: dir, Agent: agentURL, Registries: regs(t, list...)}); err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := Remove(dir)
				errs <- err
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: a Remove racing another failed: %v", round, err)
			}
		}
		for i, r := range list {
			b, err := os.ReadFile(filepath.Join(dir, r, hostsName))
			switch {
			case i%2 == 0 && (err != nil || strings.Contains(string(b), markerLine)):
				t.Fatalf("round %d: %s not restored: %v\n%s", round, r, err, b)
			case i%2 == 1 && err == nil:
				t.Fatalf("round %d: %s left behind:\n%s", round, r, b)
			}
		}
	}
}
