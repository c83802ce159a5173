// Package containerd writes containerd's registry host files (hosts.toml under config_path)
// that make the Shoal agent the first mirror of each registry, removes them again, and checks
// containerd's config.toml for what would make containerd bypass them.
package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/shoal-oci/shoal/runtimeconf"
)

// DefaultConfigPath is containerd's conventional config_path.
const DefaultConfigPath = "/etc/containerd/certs.d"

// DefaultHost is the directory containerd reads for a registry that has none of its own.
const DefaultHost = "_default"

const (
	hostsName  = "hosts.toml"
	backupName = "hosts.toml.before-shoal" // the operator's file, restored by Remove
	markerLine = "# shoal-managed:"
)

// Options is what Configure writes.
type Options struct {
	ConfigPath string   // containerd's config_path: one directory per registry below it
	Agent      *url.URL // the agent's /v2, the first host of every file
	Registries []runtimeconf.Registry
	Default    bool // also _default: every other registry tries the agent first too
}

// plan is what Configure will do to one registry's directory.
type plan struct {
	dir        string
	current    []byte // hosts.toml now, nil if absent
	perm       fs.FileMode
	saveBackup []byte // the operator's file, to save before writing; nil: already saved or none
	next       []byte
}

// Configure writes <ConfigPath>/<registry>/hosts.toml for each registry (and _default), with
// the agent as the first host and whatever the file held before kept after it; the file that
// was there is saved beside it for Remove. Every file is planned and checked before any is
// written, so a malformed existing hosts.toml stops the run with nothing changed. Files Shoal
// wrote earlier for registries no longer listed are restored. Running it twice changes nothing.
func Configure(o Options) ([]runtimeconf.Change, error) {
	if o.Agent == nil {
		return nil, errors.New("no agent address")
	}
	hosts := make([]registryDir, 0, len(o.Registries)+1)
	for _, r := range o.Registries {
		hosts = append(hosts, registryDir{name: r.Host, server: r.Server})
	}
	if o.Default {
		hosts = append(hosts, registryDir{name: DefaultHost})
	}
	var plans []plan
	for _, h := range hosts {
		p, err := planHost(o.ConfigPath, h, o.Agent)
		if err != nil {
			return nil, err
		}
		plans = append(plans, p)
	}
	var changes []runtimeconf.Change
	if err := os.MkdirAll(o.ConfigPath, 0o755); err != nil {
		return nil, fmt.Errorf("config path %s: %w", o.ConfigPath, err)
	}
	for _, p := range plans {
		c, err := apply(p, o.Agent)
		if err != nil {
			return changes, err
		}
		changes = append(changes, c)
	}
	// Registries Shoal mirrored before and no longer does get their files back.
	keep := map[string]bool{}
	for _, p := range plans {
		keep[filepath.Base(p.dir)] = true
	}
	stale, err := restoreAll(o.ConfigPath, func(name string) bool { return !keep[name] })
	changes = append(changes, stale...)
	return changes, err
}

// Remove restores every hosts.toml under configPath that Shoal wrote: the operator's file
// saved before it is put back, and a file Shoal created is deleted (with its directory, if
// Shoal created that too and it is empty). Nothing of Shoal's there is not an error.
func Remove(configPath string) ([]runtimeconf.Change, error) {
	changes, err := restoreAll(configPath, func(string) bool { return true })
	if err == nil && len(changes) == 0 {
		changes = append(changes, runtimeconf.Change{Path: configPath, Action: runtimeconf.Nothing,
			Note: "no hosts.toml written by Shoal here"})
	}
	return changes, err
}

type registryDir struct {
	name   string // docker.io, ghcr.io, 127.0.0.1:5001, _default
	server string // "" for _default: containerd falls back to the image's own registry
}

// hostDir is the directory containerd reads for a registry host under root: for host:port it
// looks for host_port_ first, then host:port as written (core/remotes/docker/config hostPaths).
// An existing host_port_ directory is used; otherwise the name as written.
func hostDir(root, host string) string {
	if i := strings.LastIndex(host, ":"); i > 0 {
		alt := filepath.Join(root, host[:i]+"_"+host[i+1:]+"_")
		if exists(alt) {
			return alt
		}
	}
	return filepath.Join(root, host)
}

func planHost(root string, h registryDir, agent *url.URL) (plan, error) {
	dir := hostDir(root, h.name)
	p := plan{dir: dir, perm: 0o644}
	path := filepath.Join(dir, hostsName)
	cur, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return p, fmt.Errorf("%s: %w", path, err)
	default:
		p.current = cur
		if st, err := os.Stat(path); err == nil {
			p.perm = st.Mode().Perm()
		}
	}
	var orig []byte // the operator's file: what Shoal's is built from and Remove restores
	m, managed := readMarker(p.current)
	switch {
	case managed && m.backup:
		if orig, err = os.ReadFile(filepath.Join(dir, backupName)); err != nil {
			return p, fmt.Errorf("%s is Shoal's, but the file it replaced cannot be read (%w): restore it by hand or delete %s, then run again",
				path, err, path)
		}
	case managed:
		// Shoal created it; nothing was there before.
	case p.current != nil:
		orig = p.current
		p.saveBackup = p.current
	}
	created := !managed && p.current == nil && !exists(dir)
	if managed {
		created = m.createdDir
	}
	next, err := render(h, dir, orig, agent, created)
	if err != nil {
		if p.saveBackup != nil || (managed && m.backup) {
			return p, fmt.Errorf("%s is not a valid hosts.toml (containerd ignores such a file and pulls from the registry directly): %w; fix it or move it away, then run again", pathOf(p, managed), err)
		}
		return p, fmt.Errorf("%s: %w", path, err)
	}
	p.next = next
	return p, nil
}

func pathOf(p plan, managed bool) string {
	if managed {
		return filepath.Join(p.dir, backupName)
	}
	return filepath.Join(p.dir, hostsName)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// render builds Shoal's hosts.toml: the marker, the operator's top-level keys (or, with no
// file, the registry's server and any Docker-style certificates in the directory), the agent's
// host, then the operator's tables minus any for the agent. The result is parsed again and
// must list the agent first.
func render(h registryDir, dir string, orig []byte, agent *url.URL, createdDir bool) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by `shoal configure containerd`: the Shoal agent at %s is this registry's first mirror.\n", agent)
	fmt.Fprintf(&b, "# `shoal configure containerd --remove` puts back what was here before")
	if orig != nil {
		fmt.Fprintf(&b, " (saved as %s).\n", backupName)
	} else {
		fmt.Fprintf(&b, " (nothing).\n")
	}
	fmt.Fprintf(&b, "%s backup=%t created-dir=%t\n\n", markerLine, orig != nil, createdDir)
	var rest []section
	if orig != nil {
		ph, err := parseHosts(orig)
		if err != nil {
			return nil, err
		}
		pre := bytes.TrimRight(ph.preamble, " \t\r\n")
		if len(pre) > 0 {
			b.Write(pre)
			b.WriteString("\n\n")
		}
		rest = ph.sections
	} else {
		if h.server != "" {
			fmt.Fprintf(&b, "server = %q\n", h.server)
		}
		certs, err := legacyCerts(dir)
		if err != nil {
			return nil, err
		}
		b.WriteString(certs)
		if h.server != "" || certs != "" {
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", agent.String())
	for _, s := range rest {
		if len(s.key) >= 2 && s.key[0] == "host" && sameHost(s.key[1], agent) {
			continue // the agent's own table, replaced by Shoal's above
		}
		b.WriteString("\n")
		b.Write(bytes.TrimRight(s.text, " \t\r\n"))
		b.WriteString("\n")
	}
	out := b.Bytes()
	if err := checkRendered(out, agent); err != nil {
		return nil, fmt.Errorf("the file Shoal would write does not parse as intended (%w); fix the existing file", err)
	}
	return out, nil
}

// checkRendered parses a file the way containerd does and requires the agent as its first host,
// for pull and resolve.
func checkRendered(b []byte, agent *url.URL) error {
	ph, err := parseHosts(b)
	if err != nil {
		return err
	}
	if len(ph.order) == 0 || ph.order[0] != agent.String() {
		return fmt.Errorf("first host is %v, want %s", ph.order, agent)
	}
	caps := ph.file.Hosts[agent.String()].Capabilities
	if strings.Join(caps, ",") != "pull,resolve" {
		return fmt.Errorf("agent capabilities %v, want pull and resolve", caps)
	}
	return nil
}

// legacyCerts lists a directory's Docker-style certificate files (*.crt; *.cert with its
// *.key) as the top-level ca and client keys. containerd loads those files by name only while
// the directory has no hosts.toml, so writing one must name them or they are lost.
func legacyCerts(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var cas []string
	var clients [][]string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		n := e.Name()
		switch {
		case strings.HasSuffix(n, ".crt"):
			cas = append(cas, n)
		case strings.HasSuffix(n, ".cert"):
			pair := []string{n}
			if key := strings.TrimSuffix(n, ".cert") + ".key"; exists(filepath.Join(dir, key)) {
				pair = append(pair, key)
			}
			clients = append(clients, pair)
		}
	}
	var b strings.Builder
	if len(cas) > 0 {
		b.WriteString("ca = [")
		for i, c := range cas {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", c)
		}
		b.WriteString("]\n")
	}
	if len(clients) > 0 {
		b.WriteString("client = [")
		for i, pair := range clients {
			if i > 0 {
				b.WriteString(", ")
			}
			if len(pair) == 1 {
				fmt.Fprintf(&b, "%q", pair[0])
			} else {
				fmt.Fprintf(&b, "[%q, %q]", pair[0], pair[1])
			}
		}
		b.WriteString("]\n")
	}
	return b.String(), nil
}

func apply(p plan, agent *url.URL) (runtimeconf.Change, error) {
	path := filepath.Join(p.dir, hostsName)
	if bytes.Equal(p.current, p.next) {
		return runtimeconf.Change{Path: path, Action: runtimeconf.Unchanged}, nil
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return runtimeconf.Change{}, fmt.Errorf("cannot write %s: %w", path, err)
	}
	note := "created"
	if p.saveBackup != nil {
		// Saved before Shoal's file replaces it: a crash in between leaves the operator's file
		// in place and its copy beside it, and the next run starts again from the file.
		bpath := filepath.Join(p.dir, backupName)
		if err := runtimeconf.WriteFileAtomic(bpath, p.saveBackup, p.perm); err != nil {
			return runtimeconf.Change{}, fmt.Errorf("cannot save %s as %s: %w", path, bpath, err)
		}
		note = "the file that was here is kept after the agent and saved as " + backupName
	} else if p.current != nil {
		note = "updated"
	}
	if err := runtimeconf.WriteFileAtomic(path, p.next, p.perm); err != nil {
		return runtimeconf.Change{}, fmt.Errorf("cannot write %s: %w", path, err)
	}
	// containerd ignores a hosts.toml it cannot parse, silently to the puller: read back what
	// is on disk now and check it again.
	written, err := os.ReadFile(path)
	if err != nil {
		return runtimeconf.Change{}, fmt.Errorf("reading back %s: %w", path, err)
	}
	if err := checkRendered(written, agent); err != nil {
		return runtimeconf.Change{}, fmt.Errorf("%s as written does not parse as intended: %w", path, err)
	}
	return runtimeconf.Change{Path: path, Action: runtimeconf.Wrote, Note: note}, nil
}

// marker is what Shoal's header records about the file it replaced.
type marker struct {
	backup     bool // the operator's file is saved as backupName
	createdDir bool // the directory did not exist before Shoal's file
}

func readMarker(b []byte) (marker, bool) {
	for _, line := range strings.SplitN(string(b), "\n", 6) {
		rest, ok := strings.CutPrefix(line, markerLine)
		if !ok {
			continue
		}
		var m marker
		for _, f := range strings.Fields(rest) {
			switch f {
			case "backup=true":
				m.backup = true
			case "created-dir=true":
				m.createdDir = true
			}
		}
		return m, true
	}
	return marker{}, false
}

// restoreAll undoes Shoal's file in every directory under root whose name match accepts.
func restoreAll(root string, match func(name string) bool) ([]runtimeconf.Change, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config path %s: %w", root, err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	var changes []runtimeconf.Change
	for _, e := range entries {
		if !e.IsDir() || !match(e.Name()) {
			continue
		}
		c, err := restore(filepath.Join(root, e.Name()))
		if err != nil {
			return changes, err
		}
		if c != nil {
			changes = append(changes, *c)
		}
	}
	return changes, nil
}

func restore(dir string) (*runtimeconf.Change, error) {
	path := filepath.Join(dir, hostsName)
	cur, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, managed := readMarker(cur)
	if !managed {
		return nil, nil
	}
	if m.backup {
		bpath := filepath.Join(dir, backupName)
		if err := os.Rename(bpath, path); err != nil {
			if errors.Is(err, fs.ErrNotExist) && !stillShoals(path) {
				return nil, nil // another Remove (the agent's preStop, the cleanup hook) restored it first
			}
			return nil, fmt.Errorf("restoring %s from %s: %w", path, bpath, err)
		}
		if err := runtimeconf.SyncDir(dir); err != nil {
			return nil, err
		}
		return &runtimeconf.Change{Path: path, Action: runtimeconf.Restored, Note: "the file that was there before Shoal's"}, nil
	}
	if err := os.Remove(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil // removed by another Remove at the same time
	} else if err != nil {
		return nil, fmt.Errorf("removing %s: %w", path, err)
	}
	note := "Shoal created it"
	if m.createdDir {
		if err := os.Remove(dir); err == nil {
			note += ", and its directory"
		}
	}
	if err := runtimeconf.SyncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	return &runtimeconf.Change{Path: path, Action: runtimeconf.Removed, Note: note}, nil
}

// stillShoals reports whether path is still a hosts.toml Shoal wrote; a missing file is not.
func stillShoals(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist)
	}
	_, managed := readMarker(b)
	return managed
}

func sortStrings(s []string) { slices.Sort(s) }
