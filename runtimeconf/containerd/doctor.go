package containerd

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/shoal-oci/shoal/runtimeconf"
)

// DefaultConfigFile is where containerd reads its configuration.
const DefaultConfigFile = "/etc/containerd/config.toml"

// The CRI plugin IDs under which the registry configuration lives: version 2 configs
// (containerd 1.x, and 2.x migrating them) use the CRI plugin's own; version 3 and later
// (containerd 2.x) split image handling into its own plugin.
const (
	pluginV1 = "cri"
	pluginV2 = "io.containerd.grpc.v1.cri"
	pluginV3 = "io.containerd.cri.v1.images"
)

// DoctorOptions is what Check inspects.
type DoctorOptions struct {
	ConfigFile string // containerd's config.toml
	// ConfigPath is the directory `shoal configure containerd` writes to, suggested when the
	// config sets none.
	ConfigPath string
	Agent      *url.URL
	Registries []runtimeconf.Registry
}

// Check reads containerd's config.toml and the hosts.toml files it points at and says what
// would make containerd pull without the agent: a config_path that is unset, or that
// containerd 2.x's transfer service ignores; the registry config under the wrong plugin ID for
// the config's version; legacy mirrors; a registry with no hosts.toml naming the agent first.
func Check(o DoctorOptions) []runtimeconf.Finding {
	var out []runtimeconf.Finding
	b, err := os.ReadFile(o.ConfigFile)
	if errors.Is(err, fs.ErrNotExist) {
		return append(out, runtimeconf.Problemf(
			"create it with the registry config_path set (containerd reads it at start, so restart containerd after):\n"+
				snippet(2, o.ConfigPath)+"\n(containerd 2.x: version = 3 and the "+pluginV3+" plugin, see `shoal doctor` after)",
			"%s does not exist: containerd runs on its defaults, which read no hosts.toml (1.x) or read them where the CRI transfer service ignores them (2.x)",
			o.ConfigFile))
	}
	if err != nil {
		return append(out, runtimeconf.Problemf("run doctor as a user that can read it", "cannot read %s: %v", o.ConfigFile, err))
	}
	var cfg map[string]any
	if err := toml.Unmarshal(b, &cfg); err != nil {
		return append(out, runtimeconf.Problemf("fix the file; containerd does not start with it",
			"%s is not valid TOML: %v", o.ConfigFile, describeTOMLError(b, err)))
	}
	version := 1
	if v, ok := cfg["version"].(int64); ok {
		version = int(v)
	}
	plugins, _ := cfg["plugins"].(map[string]any)
	var want string
	switch {
	case version <= 1:
		want = pluginV1
		out = append(out, runtimeconf.Problemf(
			"move to version = 2 (containerd 1.x) or version = 3 (containerd 2.x); `containerd config migrate` prints the migrated file",
			"%s has config version %d, which containerd 2.x no longer reads as is", o.ConfigFile, version))
	case version == 2:
		want = pluginV2
		out = append(out, runtimeconf.OK("%s: config version 2: registry settings belong under plugins.%q", o.ConfigFile, pluginV2))
	case version <= 4:
		want = pluginV3
		out = append(out, runtimeconf.OK("%s: config version %d (containerd 2.x): registry settings belong under plugins.%q", o.ConfigFile, version, pluginV3))
	default:
		return append(out, runtimeconf.Problemf("use version 2 (containerd 1.x) or 3 (containerd 2.x)",
			"%s has config version %d, which no containerd Shoal knows reads", o.ConfigFile, version))
	}
	registry := func(id string) (map[string]any, bool) {
		p, ok := plugins[id].(map[string]any)
		if !ok {
			return nil, false
		}
		r, ok := p["registry"].(map[string]any)
		return r, ok
	}
	reg, _ := registry(want)
	// A registry section under another version's plugin ID is ignored, with one exception:
	// containerd 2.x reads a version 2 config's images plugin section when the CRI plugin's
	// own has no registry (its migration keeps it); containerd 1.x does not.
	for _, id := range []string{pluginV1, pluginV2, pluginV3} {
		r, ok := registry(id)
		if id == want || !ok || len(r) == 0 {
			continue
		}
		if id == pluginV3 && version == 2 && reg == nil {
			out = append(out, runtimeconf.Problemf(
				"move it under plugins.\""+pluginV2+"\".registry, which containerd 1.x and 2.x both read in a version 2 config,\n"+
					"or make the file version = 3 if every node runs containerd 2.x; then restart containerd",
				"the registry settings are under plugins.%q, which containerd 1.x ignores in a version 2 config", id))
			continue
		}
		out = append(out, runtimeconf.Problemf(
			fmt.Sprintf("move them under plugins.%q.registry (the plugin ID of a version %d config) and restart containerd", want, version),
			"registry settings under plugins.%q are ignored with config version %d", id, version))
	}
	if reg == nil && version == 2 {
		reg, _ = registry(pluginV3)
	}
	for _, legacy := range []string{"mirrors", "configs", "auths"} {
		if m, ok := reg[legacy].(map[string]any); ok && len(m) > 0 {
			out = append(out, runtimeconf.Problemf(
				"delete the "+legacy+" section: write hosts.toml files instead (`shoal configure containerd` does, keeping your hosts and certificates),\n"+
					"then set config_path and restart containerd; containerd refuses mirrors together with config_path, and 2.x pulls without its transfer service while they are set",
				"legacy registry %q section in %s (%s)", legacy, o.ConfigFile, keys(m)))
		}
	}
	cp, _ := reg["config_path"].(string)
	if cp == "" {
		out = append(out, runtimeconf.Problemf(
			"add to "+o.ConfigFile+":\n"+snippet(version, o.ConfigPath)+"\nthen restart containerd (systemctl restart containerd): config_path is read at start",
			"config_path is not set: containerd reads no hosts.toml (containerd 2.x defaults to a colon-separated path that its transfer service ignores)"))
		return out
	}
	dirs := filepath.SplitList(cp)
	if len(dirs) > 1 {
		local := false
		if p, ok := plugins[pluginV3].(map[string]any); ok {
			local, _ = p["use_local_image_pull"].(bool)
		}
		fix := "set config_path to the one directory Shoal writes:\n" + snippet(version, dirs[0]) +
			"\nthen restart containerd (or set use_local_image_pull = true under plugins.\"" + pluginV3 + "\")"
		switch {
		case version >= 3 && !local:
			out = append(out, runtimeconf.Problemf(fix,
				"config_path %q is colon-separated: containerd 2.x's transfer service, which the CRI pulls with by default, ignores such a path and pulls from the registries directly (containerd issue 12415)", cp))
		case version == 2:
			out = append(out, runtimeconf.Problemf(fix,
				"config_path %q is colon-separated: containerd 1.x reads each directory, but containerd 2.x's transfer service ignores such a path (containerd issue 12415)", cp))
		default:
			out = append(out, runtimeconf.OK("config_path %q is colon-separated; use_local_image_pull = true makes containerd 2.x read it", cp))
		}
	} else {
		out = append(out, runtimeconf.OK("config_path = %q", cp))
	}
	for _, r := range o.Registries {
		out = append(out, checkHostsDir(dirs, r.Host, o.Agent))
	}
	return out
}

// checkHostsDir finds the hosts.toml containerd would read for host (the first directory of
// config_path that has one, else _default) and checks that it parses and lists the agent first.
func checkHostsDir(dirs []string, host string, agent *url.URL) runtimeconf.Finding {
	for _, name := range []string{host, DefaultHost} {
		for _, d := range dirs {
			dir := hostDir(d, name)
			if !exists(dir) {
				continue
			}
			path := filepath.Join(dir, hostsName)
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				return runtimeconf.Problemf("run `shoal configure containerd --config-path "+d+"`",
					"%s has no hosts.toml: containerd pulls %s from the registry directly", dir, host)
			}
			if err != nil {
				return runtimeconf.Problemf("", "cannot read %s: %v", path, err)
			}
			ph, err := parseHosts(b)
			if err != nil {
				return runtimeconf.Problemf("fix or remove it, then run `shoal configure containerd`",
					"%s is not valid (containerd ignores it without telling the puller): %v", path, err)
			}
			if agent != nil && (len(ph.order) == 0 || !sameHost(ph.order[0], agent)) {
				return runtimeconf.Problemf("run `shoal configure containerd --config-path "+d+" --agent "+agent.String()+"`",
					"%s does not name the agent %s as its first host (hosts: %v)", path, agent, ph.order)
			}
			return runtimeconf.OK("%s: the agent is the first host for %s", path, host)
		}
	}
	return runtimeconf.Problemf("run `shoal configure containerd --config-path "+dirs[0]+"`",
		"no hosts.toml for %s under %s: containerd pulls it from the registry directly", host, strings.Join(dirs, ":"))
}

// snippet is the config_path setting for a config version.
func snippet(version int, configPath string) string {
	if configPath == "" {
		configPath = DefaultConfigPath
	}
	id := pluginV2
	switch {
	case version <= 1:
		id = pluginV1
	case version >= 3:
		id = pluginV3
	}
	return fmt.Sprintf("  [plugins.%q.registry]\n    config_path = %q", id, configPath)
}

func keys(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sortStrings(ks)
	return strings.Join(ks, ", ")
}
