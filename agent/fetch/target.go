package fetch

import (
	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// Target is where a blob or manifest lives upstream: one of the node's configured registries and
// a repository there. A nil Registry means no upstream: the content comes from the cluster alone
// (a node with no origin, or a seed's pushed repository). Content is addressed by digest, so the
// Target matters only when the content must come from the origin.
type Target struct {
	Registry *origin.Registry
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

// Host is the registry's host[:port], "" with no upstream.
func (t Target) Host() string { return t.Registry.Host() }
