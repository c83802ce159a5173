// Package archive moves images between files and a registry, for sites without a network path to
// the registries the images come from: Export pulls an image or index from a registry (a seed, an
// agent) into an OCI layout, an oci-archive or a docker-archive; Import pushes every image of such
// a file into a registry under its name.
//
// Both are plain clients of the OCI distribution API built on go-containerregistry, so they work
// against any registry, not only a Shoal seed. Neither trusts the file: names in archives are
// checked before anything is written, and every blob is hashed while it is pushed.
package archive

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// Formats of an export, and the formats Import recognises by content.
const (
	// FormatOCI is an OCI image layout directory (oci-layout, index.json, blobs/).
	FormatOCI = "oci"
	// FormatOCIArchive is a tar of an OCI image layout, as written by skopeo's oci-archive.
	FormatOCIArchive = "oci-archive"
	// FormatDockerArchive is the `docker save` tarball (manifest.json with RepoTags); it holds
	// single-platform images only.
	FormatDockerArchive = "docker-archive"
)

// Options tune Import and Export. The zero value talks HTTPS to remote registries and plain HTTP
// to loopback ones, anonymously.
type Options struct {
	// Insecure allows plain HTTP and unverified TLS to a registry that is not on loopback, like
	// crane's --insecure; with a Token, only unverified TLS: the token never goes over plain HTTP
	// beyond loopback. Loopback registries (127.0.0.0/8, ::1, localhost) always allow plain HTTP.
	Insecure bool
	// RootCAs, when set, are the CAs that sign the registry's certificate (default: the system's).
	RootCAs *x509.CertPool
	// Token, when set, is sent as "Authorization: Bearer <Token>" on every registry request.
	Token string
	// Repository overrides the repository that Import pushes each image to, and is where images
	// without a name, or named by a tag alone, go. Export ignores it.
	Repository string
	// Platform picks one image of an index for a docker-archive export, which cannot hold an index.
	Platform *v1.Platform
	// Namespace, when set, names the registry Export's image is in: it is sent as ?ns= on every
	// request, as containerd does to a mirror, so that a seed or an agent serves an upstream's
	// image (or, naming the hosted registry, a pushed one). Without it a seed answers from its
	// hosted repositories and an agent from its first upstream. Import ignores it: pushes always
	// land in a seed's hosted repositories.
	Namespace string
	// Overwrite lets Export replace an existing destination; without it Export refuses.
	Overwrite bool
	// TempDir is where Import unpacks an oci-archive (as large as the archive); default os.TempDir().
	TempDir string
	// Progress, when set, is called by Import after each blob it has pushed (or found already
	// present). Calls are serialised; it must not block for long, the pushes wait for it.
	Progress func(Progress)
}

// Progress is Import's running count for the image or index being pushed.
type Progress struct {
	Ref        string // destination reference, repo:tag or repo@digest
	Blobs      int    // blobs done, uploaded or already present
	BlobsTotal int
	Bytes      int64 // bytes of the blobs done
	BytesTotal int64
}

// remoteOptions are the go-containerregistry options of one Import or Export: one transport, so
// connections are reused across its requests, and closed by done when the call is over.
func (o Options) remoteOptions(ctx context.Context) (opts []remote.Option, done func()) {
	t := o.transport()
	var rt http.RoundTripper = t
	if o.Namespace != "" {
		rt = nsTransport{ns: o.Namespace, inner: t}
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(o.auth()), remote.WithTransport(rt)}, t.CloseIdleConnections
}

// nsTransport adds ?ns= to every request but the version check (which takes no ns).
type nsTransport struct {
	ns    string
	inner http.RoundTripper
}

func (n nsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/v2/" {
		return n.inner.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	q := r.URL.Query()
	q.Set("ns", n.ns)
	r.URL.RawQuery = q.Encode()
	return n.inner.RoundTrip(r)
}

// registry parses host (host:port, no scheme) into a registry, allowing plain HTTP when
// Options.Insecure says so or the host is loopback.
func (o Options) registry(host string) (name.Registry, error) {
	if strings.Contains(host, "://") || strings.ContainsAny(host, "/@") {
		return name.Registry{}, fmt.Errorf("registry %q: want host:port without a scheme or path: %w", host, errdefs.ErrInvalid)
	}
	var nopts []name.Option
	if o.plainHTTP(host) {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.NewRegistry(host, append(nopts, name.StrictValidation)...)
	if err != nil {
		return name.Registry{}, fmt.Errorf("registry %q: %v: %w", host, err, errdefs.ErrInvalid)
	}
	return r, nil
}

// plainHTTP reports whether host may be spoken to over plain HTTP: on loopback, or with
// Insecure when no token would cross the network in clear.
func (o Options) plainHTTP(host string) bool {
	return isLoopback(host) || (o.Insecure && o.Token == "")
}

func isLoopback(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// transport is the HTTP transport for registry requests: ggcr's default, with certificate checks
// off when Insecure is set (a site's seed often has a self-signed certificate).
func (o Options) transport() *http.Transport {
	t := remote.DefaultTransport.(*http.Transport).Clone()
	switch {
	case o.Insecure:
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by --insecure
	case o.RootCAs != nil:
		t.TLSClientConfig = &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12}
	}
	return t
}

func (o Options) auth() authn.Authenticator {
	if o.Token == "" {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{RegistryToken: o.Token})
}
