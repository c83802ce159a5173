package fetch

import (
	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/reference"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// Target is where a blob or manifest lives: a namespace and a repository in it. The namespace is
// either an upstream registry or the hosted namespace (what is pushed to the cluster's seeds),
// and the two never mix: a hosted repository never answers for an upstream's, nor the reverse.
// Content is addressed by digest, so the Target matters only when the content must come from
// the origin, and for which tags it names.
type Target struct {
	// Registry is the upstream the node fetches from; nil when it has none for this namespace.
	Registry *origin.Registry
	// Upstream names an upstream registry the node has no origin for (a node with no
	// --registry): its content comes from the cluster alone. Empty when Registry is set; empty
	// with a nil Registry, the target is in the hosted namespace.
	Upstream string
	Repo     string
	// Credential is the credential of the client the content is fetched for, forwarded to the
	// peers asked for it: a peer serves a private repository's content only to a credential the
	// origin accepts (agent/access). Zero for none.
	Credential credential.Credential
}

// Access is what a request to a peer for this target carries.
func (t Target) Access() credential.Access {
	return credential.Access{Registry: t.Host(), Repo: t.Repo, Credential: t.Credential}
}

// Hosted reports whether the target is in the hosted namespace, which has no origin: its tags
// come from the seeds, its content from the cluster.
func (t Target) Hosted() bool { return t.Registry == nil && t.Upstream == "" }

// Host names the target's namespace as peers exchange it: the upstream's host in its canonical
// spelling (reference.CanonicalHost), or "" for the hosted namespace. For an alias
// ("docker.io=https://harbor.corp") it is the alias's name, not the host it is served by, so
// nodes that reach one registry through different caches share its tags and content.
func (t Target) Host() string {
	if t.Registry != nil {
		return reference.CanonicalHost(t.Registry.Name())
	}
	return t.Upstream
}
