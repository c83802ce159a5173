package names

import "strings"

// PathPrefix is how a registry host is written as the first path component of a repository
// name, the form CRI-O, podman and skopeo reach one agent's several upstreams by
// (/v2/<prefix>/<repository>/...): the host itself, with a port's colon written as '_'
// (127.0.0.1:5001 → 127.0.0.1_5001), since a repository name allows no colon and a host name no
// underscore. A bracketed IPv6 host has no such form.
func PathPrefix(host string) (string, bool) {
	if !ValidRegistryHost(host) || strings.HasPrefix(host, "[") {
		return "", false
	}
	p := strings.ToLower(strings.Replace(host, ":", "_", 1))
	return p, repoRE.MatchString(p)
}

// HostFromPathPrefix reverses PathPrefix: the registry host a repository name's first path
// component names, if it names one (it has a dot or a port, as registry hosts in image names do,
// or is localhost).
func HostFromPathPrefix(component string) (string, bool) {
	host := component
	if i := strings.LastIndexByte(component, '_'); i > 0 {
		host = component[:i] + ":" + component[i+1:]
	}
	if !ValidRegistryHost(host) || (!strings.ContainsAny(host, ".:") && host != "localhost") {
		return "", false
	}
	return host, true
}
