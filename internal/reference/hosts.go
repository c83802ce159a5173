package reference

import "strings"

// DockerHub is the name CanonicalHost gives Docker Hub, the one clients write.
const DockerHub = "docker.io"

// IsDockerHub reports whether host is one of the names Docker Hub is known by: clients write
// "docker.io", config files say "index.docker.io" (and ggcr rewrites "docker.io" to it), and the
// API lives at "registry-1.docker.io". host is compared as written; CanonicalHost lower-cases.
func IsDockerHub(host string) bool {
	switch host {
	case DockerHub, "index.docker.io", "registry-1.docker.io":
		return true
	}
	return false
}

// CanonicalHost is the identity of a registry host, for telling whether two names mean the same
// registry: host[:port] in lower case, with every Docker Hub alias folded into DockerHub.
func CanonicalHost(host string) string {
	host = strings.ToLower(host)
	if IsDockerHub(host) {
		return DockerHub
	}
	return host
}
