// Package crio writes the registries.conf.d drop-in that makes the Shoal agent the first mirror
// of each registry for CRI-O, podman, skopeo and buildah (containers/image's sysregistriesv2),
// and removes it again.
//
// These clients name no registry to a mirror (containerd's ?ns=), so each mirror location
// carries the registry as a path prefix, <agent>/<registry host>: a pull of
// docker.io/library/alpine asks the agent for /v2/docker.io/library/alpine/..., and one agent
// serves every registry. A port's colon is written '_' there (names.PathPrefix).
package crio

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/runtimeconf"
)

// Defaults for the containers/image configuration.
const (
	DefaultDropInDir  = "/etc/containers/registries.conf.d"
	DefaultMainConfig = "/etc/containers/registries.conf"
	// DropInName sorts after the usual NN- drop-ins: for a registry defined in several files
	// the last one wins, and Shoal's keeps the mirrors of those before it.
	DropInName = "99-shoal.conf"
)

const markerLine = "# shoal-managed:"

// Options is what Configure writes.
type Options struct {
	Dir        string // registries.conf.d
	MainConfig string // registries.conf, whose entries for the same registries are kept
	Agent      *url.URL
	Registries []runtimeconf.Registry
}

// registriesConf is the part of a registries.conf (version 2) that Shoal reads and writes.
type registriesConf struct {
	Registries []registry `toml:"registry,omitempty"`
}

type registry struct {
	Prefix             string     `toml:"prefix,omitempty"`
	Location           string     `toml:"location,omitempty"`
	Insecure           bool       `toml:"insecure,omitempty"`
	Blocked            bool       `toml:"blocked,omitempty"`
	MirrorByDigestOnly bool       `toml:"mirror-by-digest-only,omitempty"`
	Mirrors            []endpoint `toml:"mirror,omitempty"`
}

type endpoint struct {
	Location       string `toml:"location"`
	Insecure       bool   `toml:"insecure,omitempty"`
	PullFromMirror string `toml:"pull-from-mirror,omitempty"`
}

func (r registry) prefix() string {
	if r.Prefix != "" {
		return r.Prefix
	}
	return r.Location
}

// MirrorLocation is the agent's mirror location for a registry: the agent's host:port with the
// registry host as a path prefix (127.0.0.1:5000/docker.io; a port's colon is written '_', as
// in 127.0.0.1:5000/127.0.0.1_5001, since an image name's path allows no colon).
func MirrorLocation(agent *url.URL, registryHost string) (string, error) {
	p, ok := names.PathPrefix(registryHost)
	if !ok {
		return "", fmt.Errorf("registry %s cannot be named in a mirror's path (an IPv6 address?): give it a host name", registryHost)
	}
	return agent.Host + "/" + p, nil
}

// Configure writes <Dir>/99-shoal.conf: for each registry a [[registry]] whose first mirror is
// the agent, keeping the location, flags and mirrors that registries.conf and the drop-ins
// before it give that registry (a later file replaces an earlier one's entry whole, so they
// would otherwise be lost). A file of that name that is not Shoal's is left alone and reported.
func Configure(o Options) ([]runtimeconf.Change, error) {
	if o.Agent == nil {
		return nil, errors.New("no agent address")
	}
	path := filepath.Join(o.Dir, DropInName)
	cur, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if cur != nil && !managed(cur) {
		return nil, fmt.Errorf("%s exists and was not written by Shoal: move it away or merge it by hand, then run again", path)
	}
	existing, later, err := existingEntries(o.MainConfig, o.Dir)
	if err != nil {
		return nil, err
	}
	next, err := render(o.Agent, o.Registries, existing)
	if err != nil {
		return nil, err
	}
	var changes []runtimeconf.Change
	if bytes.Equal(cur, next) {
		changes = append(changes, runtimeconf.Change{Path: path, Action: runtimeconf.Unchanged})
	} else {
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("cannot write %s: %w", path, err)
		}
		if err := runtimeconf.WriteFileAtomic(path, next, 0o644); err != nil {
			return nil, fmt.Errorf("cannot write %s: %w", path, err)
		}
		written, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading back %s: %w", path, err)
		}
		if err := check(written, o.Agent, o.Registries); err != nil {
			return nil, fmt.Errorf("%s as written does not parse as intended: %w", path, err)
		}
		changes = append(changes, runtimeconf.Change{Path: path, Action: runtimeconf.Wrote,
			Note: "CRI-O reads it on reload (systemctl reload crio); podman and skopeo on their next run"})
	}
	for _, l := range later {
		for _, r := range o.Registries {
			if slices.Contains(l.prefixes, r.Host) {
				changes = append(changes, runtimeconf.Change{Path: l.path, Action: runtimeconf.Warning,
					Note: fmt.Sprintf("sorts after %s and defines %s too, which replaces Shoal's mirror", DropInName, r.Host)})
			}
		}
	}
	return changes, nil
}

// Remove deletes Shoal's drop-in. Nothing there is not an error; a file of that name that is
// not Shoal's is left alone.
func Remove(dir string) ([]runtimeconf.Change, error) {
	path := filepath.Join(dir, DropInName)
	cur, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []runtimeconf.Change{{Path: path, Action: runtimeconf.Nothing, Note: "no drop-in written by Shoal here"}}, nil
	}
	if err != nil {
		return nil, err
	}
	if !managed(cur) {
		return []runtimeconf.Change{{Path: path, Action: runtimeconf.Nothing, Note: "not written by Shoal, left alone"}}, nil
	}
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("removing %s: %w", path, err)
	}
	if err := runtimeconf.SyncDir(dir); err != nil {
		return nil, err
	}
	return []runtimeconf.Change{{Path: path, Action: runtimeconf.Removed}}, nil
}

func managed(b []byte) bool {
	for _, line := range strings.SplitN(string(b), "\n", 6) {
		if strings.HasPrefix(line, markerLine) {
			return true
		}
	}
	return false
}

type laterFile struct {
	path     string
	prefixes []string
}

// existingEntries reads registries.conf and then each drop-in in the order containers/image
// does (by name), returning the entry in force for each prefix before Shoal's file, and the
// drop-ins that sort after it.
func existingEntries(mainConfig, dir string) (map[string]registry, []laterFile, error) {
	entries := map[string]registry{}
	add := func(path string) ([]string, error) {
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var c registriesConf
		if err := toml.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("%s is not valid TOML (CRI-O and podman refuse it too): %w; fix it, then run again", path, err)
		}
		var prefixes []string
		for _, r := range c.Registries {
			prefixes = append(prefixes, r.prefix())
		}
		return prefixes, nil
	}
	read := func(path string) error {
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		var c registriesConf
		if err := toml.Unmarshal(b, &c); err != nil {
			return fmt.Errorf("%s is not valid TOML (CRI-O and podman refuse it too): %w; fix it, then run again", path, err)
		}
		for _, r := range c.Registries {
			entries[r.prefix()] = r
		}
		return nil
	}
	if mainConfig != "" {
		if err := read(mainConfig); err != nil {
			return nil, nil, err
		}
	}
	names, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	var later []laterFile
	for _, e := range names { // ReadDir sorts by name, as containers/image does
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".conf") || e.Name() == DropInName {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if e.Name() > DropInName {
			prefixes, err := add(path)
			if err != nil {
				return nil, nil, err
			}
			later = append(later, laterFile{path: path, prefixes: prefixes})
			continue
		}
		if err := read(path); err != nil {
			return nil, nil, err
		}
	}
	return entries, later, nil
}

func render(agent *url.URL, regs []runtimeconf.Registry, existing map[string]registry) ([]byte, error) {
	conf := registriesConf{}
	for _, r := range regs {
		e, ok := existing[r.Host]
		if !ok {
			e = registry{Location: r.Host, Insecure: r.Insecure()}
		}
		e.Prefix = r.Host
		if e.Location == "" {
			e.Location = r.Host
		}
		loc, err := MirrorLocation(agent, r.Host)
		if err != nil {
			return nil, err
		}
		mirror := endpoint{Location: loc, Insecure: agent.Scheme == "http"}
		mirrors := []endpoint{mirror}
		for _, m := range e.Mirrors {
			if m.Location != mirror.Location {
				mirrors = append(mirrors, m)
			}
		}
		e.Mirrors = mirrors
		conf.Registries = append(conf.Registries, e)
	}
	body, err := toml.Marshal(conf)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by `shoal configure crio`: the Shoal agent at %s is the first mirror of each registry below,\n", agent)
	b.WriteString("# which it is asked for under a path prefix (<agent>/<registry>/<repository>).\n")
	b.WriteString("# Entries for these registries in registries.conf and earlier drop-ins are kept here after the agent.\n")
	b.WriteString("# `shoal configure crio --remove` deletes this file.\n")
	b.WriteString(markerLine + " crio\n\n")
	b.Write(body)
	if err := check(b.Bytes(), agent, regs); err != nil {
		return nil, fmt.Errorf("the drop-in Shoal would write does not parse as intended: %w", err)
	}
	return b.Bytes(), nil
}

// check parses a drop-in and requires the agent as the first mirror of every registry.
func check(b []byte, agent *url.URL, regs []runtimeconf.Registry) error {
	var c registriesConf
	if err := toml.Unmarshal(b, &c); err != nil {
		return err
	}
	for _, r := range regs {
		i := slices.IndexFunc(c.Registries, func(e registry) bool { return e.prefix() == r.Host })
		if i < 0 {
			return fmt.Errorf("no entry for %s", r.Host)
		}
		loc, err := MirrorLocation(agent, r.Host)
		if err != nil {
			return err
		}
		if m := c.Registries[i].Mirrors; len(m) == 0 || m[0].Location != loc {
			return fmt.Errorf("%s: first mirror is not the agent", r.Host)
		}
	}
	return nil
}
