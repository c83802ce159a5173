package origin

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/internal/reference"
)

// Registry is one configured upstream. It is immutable and safe to share.
type Registry struct {
	url  url.URL       // scheme://host, both lower case, nothing else
	name name.Registry // the same registry for ggcr's transport
	// alias is the registry name clients and peers use for this upstream when it is served by
	// another host (ParseUpstream's "name=URL"); "" when the name is the host.
	alias string
	// prefix is the repository path prepended at the origin for an alias ("dockerhub-proxy" for
	// "docker.io=https://harbor.corp/dockerhub-proxy"); "" for none.
	prefix string
}

// ParseRegistry parses an upstream URL such as "https://registry-1.docker.io" or "http://127.0.0.1:5001".
// The scheme (http or https) is required; a path, query, fragment or userinfo is refused, since
// credentials belong in a docker config and registries are served at the root. Errors wrap
// errdefs.ErrInvalid. "docker.io" is rewritten to "index.docker.io", as ggcr does, so that the
// host we send requests to is the host ggcr attaches credentials for.
func ParseRegistry(rawURL string) (*Registry, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w: %w", rawURL, err, errdefs.ErrInvalid)
	}
	invalid := func(why string) error {
		return fmt.Errorf("registry %q: %s: %w", rawURL, why, errdefs.ErrInvalid)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, invalid("scheme must be http or https")
	case u.Host == "":
		return nil, invalid("no host")
	case u.User != nil:
		return nil, invalid("credentials in the URL are not accepted; use a docker config")
	case u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, invalid("only scheme://host[:port] is accepted")
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	n, err := name.NewRegistry(strings.ToLower(u.Host), opts...)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w: %w", rawURL, err, errdefs.ErrInvalid)
	}
	return &Registry{url: url.URL{Scheme: u.Scheme, Host: n.RegistryStr()}, name: n}, nil
}

// ParseUpstream parses one --registry value: an upstream URL (ParseRegistry), or "name=URL", an
// alias: requests for the registry name (ns=name, or a /v2/<name>/ path prefix) are served by the
// upstream at URL, typically a pull-through cache such as Harbor or Artifactory. For an alias the
// URL may carry a path, prepended to every repository at the origin:
// "docker.io=https://harbor.corp/dockerhub-proxy" serves docker.io's library/nginx from
// harbor.corp's dockerhub-proxy/library/nginx. Name is the identity (Name) that tag keys, peers and
// access records use, so nodes with different aliases for one registry agree; the URL's host gets
// the node's credentials from its docker config, and clients' own credentials, which they hold for
// the name, are never sent to it. Errors wrap errdefs.ErrInvalid.
func ParseUpstream(spec string) (*Registry, error) {
	alias, rawURL, ok := strings.Cut(spec, "=")
	if !ok {
		return ParseRegistry(spec)
	}
	alias = strings.ToLower(alias)
	if !names.ValidRegistryHost(alias) {
		return nil, fmt.Errorf("registry %q: %q is not a registry host[:port]: %w", spec, alias, errdefs.ErrInvalid)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w: %w", spec, err, errdefs.ErrInvalid)
	}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" && (u.RawPath != "" || !names.ValidRepository(prefix)) {
		return nil, fmt.Errorf("registry %q: the path %q is not a repository prefix: %w", spec, u.Path, errdefs.ErrInvalid)
	}
	u.Path, u.RawPath = "", ""
	r, err := ParseRegistry(u.String())
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w", spec, err)
	}
	r.alias, r.prefix = alias, prefix
	return r, nil
}

// Name is the registry name clients and peers know this upstream by: the alias of
// "name=URL", else Host.
func (r *Registry) Name() string {
	if r != nil && r.alias != "" {
		return r.alias
	}
	return r.Host()
}

// remote is repo's path at the origin, under the alias's path prefix.
func (r *Registry) remote(repo string) string {
	if r.prefix == "" {
		return repo
	}
	return r.prefix + "/" + repo
}

// Host returns host[:port] in lower case, e.g. "registry-1.docker.io" or "127.0.0.1:5001": where
// requests go, which for an alias is not the registry's Name.
func (r *Registry) Host() string {
	if r == nil {
		return ""
	}
	return r.url.Host
}

// String returns the registry's URL, e.g. "https://registry-1.docker.io", preceded by
// "name=" for an alias and followed by its path prefix.
func (r *Registry) String() string {
	s := r.url.String()
	if r.prefix != "" {
		s += "/" + r.prefix
	}
	if r.alias != "" {
		s = r.alias + "=" + s
	}
	return s
}

// endpoint returns the URL of an API path on r. The path is escaped by url.URL, never concatenated
// into the host.
func (r *Registry) endpoint(path string, query url.Values) *url.URL {
	u := r.url
	u.Path = path
	u.RawQuery = query.Encode()
	return &u
}

// Set is the ordered list of configured upstreams. It is immutable and safe to share.
type Set struct {
	regs []*Registry
}

// NewSet parses urls in order, each an upstream URL or a "name=URL" alias (ParseUpstream). It
// needs at least one, and refuses two with the same Name (the same host, or two Docker Hub
// spellings), since Select could not tell them apart. Errors wrap errdefs.ErrInvalid.
func NewSet(urls []string) (*Set, error) {
	if len(urls) == 0 {
		return nil, fmt.Errorf("no upstream registry configured: %w", errdefs.ErrInvalid)
	}
	s := &Set{}
	seen := make(map[string]string, len(urls))
	for _, raw := range urls {
		r, err := ParseUpstream(raw)
		if err != nil {
			return nil, err
		}
		k := reference.CanonicalHost(r.Name())
		if prev, ok := seen[k]; ok {
			return nil, fmt.Errorf("registry %q duplicates %q: %w", raw, prev, errdefs.ErrInvalid)
		}
		seen[k] = raw
		s.regs = append(s.regs, r)
	}
	return s, nil
}

// EmptySet returns a Set without upstreams, for a node that serves only content pushed to it (a
// seed without mirrored registries): its Select yields a nil *Registry and no error for any ns,
// leaving the Backend to decide what to serve.
func EmptySet() *Set { return &Set{} }

// Select returns the upstream for a request's ns parameter: the first registry when ns is empty,
// else the one whose Name (host[:port], or alias) matches ns case-insensitively, where
// "docker.io", "index.docker.io" and "registry-1.docker.io" all mean Docker Hub. An alias's URL
// host is not a name it answers to. Any other ns yields an error
// wrapping errdefs.ErrNotConfigured. Select never does I/O, so a request for an unknown registry
// causes no outbound connection.
func (s *Set) Select(ns string) (*Registry, error) {
	if len(s.regs) == 0 {
		return nil, nil
	}
	if ns == "" {
		return s.regs[0], nil
	}
	k := reference.CanonicalHost(ns)
	for _, r := range s.regs {
		if reference.CanonicalHost(r.Name()) == k {
			return r, nil
		}
	}
	return nil, fmt.Errorf("registry %q: %w", ns, errdefs.ErrNotConfigured)
}

// Registries returns the configured upstreams in order, in a new slice.
func (s *Set) Registries() []*Registry { return slices.Clone(s.regs) }
