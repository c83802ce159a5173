// Package runtimeconf is what `shoal configure` and `shoal doctor` share: the registries a node
// mirrors as a container runtime names them, the agent's address, files written so that a crash
// never leaves half of one, and the findings doctor prints. The runtimes' own formats live in
// the subpackages containerd and crio.
package runtimeconf

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/internal/reference"
)

// DefaultAgent is where the agent serves /v2 on every node (`shoal agent --listen`'s default).
const DefaultAgent = "http://127.0.0.1:5000"

// DockerHubServer is Docker Hub's API endpoint, the server behind the name docker.io.
const DockerHubServer = "https://registry-1.docker.io"

// Registry is one mirrored registry as the runtime names it and where it falls back to when the
// agent cannot serve.
type Registry struct {
	// Host is the registry as image names spell it and as the runtime names it to a mirror
	// (containerd's ?ns=, the path prefix CRI-O's mirror location adds): docker.io, ghcr.io,
	// 127.0.0.1:5001.
	Host string
	// Server is the registry's own endpoint: https://registry-1.docker.io for docker.io,
	// https://<host> otherwise unless given as an http:// URL.
	Server string
}

// Insecure reports whether the registry is reached over plain HTTP.
func (r Registry) Insecure() bool { return strings.HasPrefix(r.Server, "http://") }

// ParseRegistry reads one registry in any of the forms the agent's --registry takes, so that an
// init container and the agent can be given the same list:
//
//	docker.io, ghcr.io, registry.example:5000     a host, reached over HTTPS
//	https://ghcr.io, http://127.0.0.1:5001        a URL (registry-1.docker.io is docker.io)
//	docker.io=https://harbor.corp                 an alias: the agent serves docker.io from
//	                                              harbor.corp; the runtime still names docker.io
//	                                              and falls back to Docker Hub itself
func ParseRegistry(s string) (Registry, error) {
	s = strings.TrimSpace(s)
	if host, upstream, ok := strings.Cut(s, "="); ok {
		if _, err := parseURL(upstream); err != nil {
			return Registry{}, fmt.Errorf("registry %q: the upstream after '=': %w", s, err)
		}
		if strings.Contains(host, "://") {
			return Registry{}, fmt.Errorf("registry %q: before '=' comes the registry's name (docker.io), not a URL", s)
		}
		return hostRegistry(s, host)
	}
	if strings.Contains(s, "://") {
		u, err := parseURL(s)
		if err != nil {
			return Registry{}, fmt.Errorf("registry %q: %w", s, err)
		}
		host := reference.CanonicalHost(u.Host)
		if host == reference.DockerHub {
			return Registry{Host: host, Server: DockerHubServer}, nil
		}
		return Registry{Host: host, Server: u.Scheme + "://" + u.Host}, nil
	}
	return hostRegistry(s, s)
}

func hostRegistry(arg, host string) (Registry, error) {
	if !names.ValidRegistryHost(host) {
		return Registry{}, fmt.Errorf("registry %q: want a registry host[:port] such as ghcr.io, a URL, or name=URL", arg)
	}
	host = reference.CanonicalHost(host)
	if host == reference.DockerHub {
		return Registry{Host: host, Server: DockerHubServer}, nil
	}
	return Registry{Host: host, Server: "https://" + host}, nil
}

// ParseRegistries parses a list (flags or a comma-separated SHOAL_REGISTRY), dropping empty
// entries and duplicates; an empty list means Docker Hub, as for the agent. "none" (an agent
// with no origin) means no registry.
func ParseRegistries(list []string) ([]Registry, error) {
	var out []Registry
	seen := map[string]bool{}
	none := false
	for _, s := range list {
		s = strings.TrimSpace(s)
		switch s {
		case "":
			continue
		case "none":
			none = true
			continue
		}
		r, err := ParseRegistry(s)
		if err != nil {
			return nil, err
		}
		if !seen[r.Host] {
			seen[r.Host] = true
			out = append(out, r)
		}
	}
	if none && len(out) > 0 {
		return nil, errors.New(`registry "none" cannot be combined with registries`)
	}
	if len(out) == 0 && !none {
		out = []Registry{{Host: reference.DockerHub, Server: DockerHubServer}}
	}
	return out, nil
}

// ParseAgent checks the agent's address, an http or https URL with no path
// (http://127.0.0.1:5000), and returns it in the form the files name it.
func ParseAgent(s string) (*url.URL, error) {
	u, err := parseURL(s)
	if err != nil {
		return nil, fmt.Errorf("agent %q: %w", s, err)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("agent %q: want a port, such as http://127.0.0.1:5000", s)
	}
	return u, nil
}

func parseURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("want an http:// or https:// URL")
	}
	if u.Host == "" || !names.ValidRegistryHost(u.Host) {
		return nil, errors.New("want a host[:port] after the scheme")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, errors.New("want scheme://host[:port] alone, with no path, query or user")
	}
	u.Path = ""
	return u, nil
}
