// Package origin is the client an agent uses to talk to upstream ("origin") registries.
//
// Authentication (anonymous bearer tokens, basic credentials, token refresh), retries on 429 and
// 5xx, and the rule that credentials never follow a redirect to another host all come from
// go-containerregistry's transport package; this package adds the upstream configuration, a cache
// of authenticated transports, size and digest limits on what it reads, a stall timeout on
// bodies, and the mapping of origin answers to the errdefs classes.
package origin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

const (
	// maxTransports bounds the cache of authenticated transports, one per (registry, repository).
	maxTransports = 1024
	// authTimeout bounds the ping and token exchange that build a transport. They run detached
	// from the caller's context because their result is shared with every concurrent caller.
	authTimeout = 30 * time.Second
)

// Operation names passed to Observer.
const (
	opBlob         = "blob"
	opBlobHead     = "blob_head"
	opManifest     = "manifest"
	opManifestHead = "manifest_head"
	opTags         = "tags"
	opReferrers    = "referrers"
)

// Observer is told about every origin request once it has an answer, for metrics. registry is the
// host, op one of "blob", "blob_head", "manifest", "manifest_head", "tags", "referrers"; status is
// the final HTTP status or 0 when there was none; d runs from the call until the answer (for
// GetBlob, until the headers). Implementations must be safe for concurrent use and must not block.
type Observer interface {
	OriginRequest(registry, op string, status int, err error, d time.Duration)
}

// Option configures a Client.
type Option func(*options)

type options struct {
	keychains []authn.Keychain
	configs   []*dockerConfig
	base      http.RoundTripper
	stall     time.Duration
	backoff   transport.Backoff
	userAgent string
	observer  Observer
}

// WithDockerConfig reads credentials from the docker config.json at path: "auths" entries and the
// credential helpers named by "credHelpers" or "credsStore" (docker/cli also honours the
// DOCKER_AUTH_CONFIG environment variable). The file is checked by NewClient and read again
// whenever a transport is built, so rotated credentials are picked up for new repositories.
// Without this option or WithKeychain the client is anonymous: a node daemon must not silently
// pick up root's ~/.docker credentials.
func WithDockerConfig(path string) Option {
	return func(o *options) {
		dc := &dockerConfig{path: path}
		o.configs = append(o.configs, dc)
		o.keychains = append(o.keychains, dc)
	}
}

// WithKeychain adds a source of credentials. Keychains are asked in the order given (this one and
// those from WithDockerConfig); the first that is not anonymous wins.
func WithKeychain(k authn.Keychain) Option {
	return func(o *options) { o.keychains = append(o.keychains, k) }
}

// WithBaseTransport sets the transport under authentication and retries. The default is a clone of
// http.DefaultTransport (proxy from the environment) with 10s dial and TLS handshake timeouts, a
// 30s response header timeout and 32 idle connections per host.
func WithBaseTransport(rt http.RoundTripper) Option {
	return func(o *options) { o.base = rt }
}

// WithStallTimeout sets how long a response body may deliver no byte before reads fail with an
// error wrapping errdefs.ErrUnavailable and the request is cancelled. The default is 30s.
func WithStallTimeout(d time.Duration) Option {
	return func(o *options) { o.stall = d }
}

// WithRetryBackoff sets the backoff for retrying requests that fail on the network or with 429,
// 500, 502, 503 or 504. Steps is the number of attempts. The default makes four attempts, waiting
// about 200ms, 400ms and 800ms between them.
func WithRetryBackoff(b transport.Backoff) Option {
	return func(o *options) { o.backoff = b }
}

// WithUserAgent sets the User-Agent product sent to origins (ggcr appends its own).
func WithUserAgent(ua string) Option {
	return func(o *options) { o.userAgent = ua }
}

// WithObserver sets the Observer told about every origin request.
func WithObserver(obs Observer) Option {
	return func(o *options) { o.observer = obs }
}

// Client talks to origin registries. It is safe for concurrent use and holds no goroutines or
// files of its own; it has nothing to close. Every method obeys its context.
type Client struct {
	keychain  authn.Keychain
	base      http.RoundTripper
	retry     []transport.Option
	userAgent string
	stall     time.Duration
	observer  Observer

	auths singleflight.Group
	mu    sync.Mutex
	cache map[string]http.RoundTripper // registry URL + " " + repo → authenticated transport
}

// NewClient returns a Client configured by opts. It fails, with an error wrapping errdefs.ErrInvalid,
// when a docker config cannot be read or an option is out of range.
func NewClient(opts ...Option) (*Client, error) {
	o := options{
		stall:   30 * time.Second,
		backoff: transport.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 4},
	}
	for _, opt := range opts {
		opt(&o)
	}
	for _, dc := range o.configs {
		if _, err := dc.load(); err != nil {
			return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalid)
		}
	}
	if o.stall <= 0 {
		return nil, fmt.Errorf("stall timeout %s must be positive: %w", o.stall, errdefs.ErrInvalid)
	}
	if o.base == nil {
		o.base = defaultTransport()
	}
	return &Client{
		keychain: authn.NewMultiKeychain(o.keychains...),
		base:     o.base,
		retry: []transport.Option{
			transport.WithRetryBackoff(o.backoff),
			transport.WithRetryStatusCodes(http.StatusTooManyRequests, http.StatusInternalServerError,
				http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout),
		},
		userAgent: o.userAgent,
		stall:     o.stall,
		observer:  o.observer,
		cache:     make(map[string]http.RoundTripper),
	}, nil
}

func defaultTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = http.ProxyFromEnvironment
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	t.MaxIdleConnsPerHost = 32
	// Blobs are already compressed, and a transparently decoded body would lose its length.
	t.DisableCompression = true
	return t
}

// transport returns the authenticated transport for pulling repo from reg, building it on first
// use: ggcr pings the registry and, for a bearer challenge, fetches a token with pull scope.
// Concurrent callers share one build; a failed build is not cached, so the next call tries again.
func (c *Client) transport(ctx context.Context, reg *Registry, repo string) (http.RoundTripper, error) {
	key := reg.String() + " " + repo
	c.mu.Lock()
	rt, ok := c.cache[key]
	c.mu.Unlock()
	if ok {
		return rt, nil
	}
	ch := c.auths.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), authTimeout)
		defer cancel()
		res := reg.name.Repo(reg.remote(repo))
		auth, err := authn.Resolve(ctx, c.keychain, res)
		if err != nil {
			return nil, fmt.Errorf("credentials for %s: %w", res, err)
		}
		rt, err := transport.NewWithContext(ctx, reg.name, auth, c.unauthenticated(reg),
			[]string{"repository:" + reg.remote(repo) + ":" + transport.PullScope})
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.cache) >= maxTransports {
			for k := range c.cache { // evict an arbitrary entry
				delete(c.cache, k)
				break
			}
		}
		c.cache[key] = rt
		return rt, nil
	})
	select {
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(http.RoundTripper), nil
	}
}

// transportFor is the transport for a request for repo: the node's own (with its credentials,
// or anonymous), unless the node has no credentials for repo and ctx carries a client's for it
// (credential.NewContext, set for a private repository's content once the origin accepted that
// credential): then the client's Authorization header is sent as it is, to reg's host only.
func (c *Client) transportFor(ctx context.Context, reg *Registry, repo string) (http.RoundTripper, error) {
	a, ok := credential.FromContext(ctx)
	if ok && !a.Credential.IsZero() && a.Repo == repo && strings.EqualFold(a.Registry, reg.Host()) {
		if auth, err := authn.Resolve(ctx, c.keychain, reg.name.Repo(reg.remote(repo))); err == nil && auth == authn.Anonymous {
			return clientCredential{host: reg.Host(), header: a.Credential.Header(), inner: c.unauthenticated(reg)}, nil
		}
	}
	return c.transport(ctx, reg, repo)
}

// clientCredential sends a client's Authorization header with requests to host, and never to
// another (a redirect to object storage).
type clientCredential struct {
	host, header string
	inner        http.RoundTripper
}

func (t clientCredential) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.EqualFold(req.URL.Host, t.host) {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", t.header)
	}
	return t.inner.RoundTrip(req)
}

// unauthenticated is the stack under ggcr's authentication for reg: retries, user agent and,
// for an https registry, a refusal to fall back to plain HTTP.
func (c *Client) unauthenticated(reg *Registry) http.RoundTripper {
	rt := c.base
	if reg.url.Scheme == "https" {
		rt = noDowngrade{host: reg.Host(), inner: rt}
	}
	return transport.NewUserAgent(transport.NewRetry(rt, c.retry...), c.userAgent)
}

// noDowngrade refuses plain-HTTP requests to a registry configured as https. ggcr's ping falls back
// to http for loopback and RFC 1918 hosts (name.Registry.Scheme), which would silently drop TLS.
type noDowngrade struct {
	host  string
	inner http.RoundTripper
}

func (t noDowngrade) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && strings.EqualFold(req.URL.Host, t.host) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("refusing plain http to %s, which is configured as https", t.host)
	}
	return t.inner.RoundTrip(req)
}

// send makes one request for repo on reg, following redirects. On success the response body is
// guarded by the stall timeout and the caller must close it; the request's context lives until then.
func (c *Client) send(ctx context.Context, reg *Registry, repo, method, u string, accept []string) (*http.Response, error) {
	return c.sendWith(ctx, reg, repo, method, u, accept, nil)
}

// sendWith is send with extra request headers.
func (c *Client) sendWith(ctx context.Context, reg *Registry, repo, method, u string, accept []string, extra http.Header) (*http.Response, error) {
	rt, err := c.transportFor(ctx, reg, repo)
	if err != nil {
		return nil, classify(err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if len(accept) > 0 {
		req.Header.Set("Accept", strings.Join(accept, ", "))
	}
	for k, v := range extra {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		cancel(nil)
		return nil, classify(err)
	}
	resp.Body = newStallReader(ctx, resp.Body, c.stall, cancel)
	return resp, nil
}

// observe reports a finished call to the Observer. It is deferred with pointers to the named
// results so that it sees the final status and error.
func (c *Client) observe(reg *Registry, op string, start time.Time, status *int, err *error) {
	if c.observer != nil {
		c.observer.OriginRequest(reg.Host(), op, *status, *err, time.Since(start))
	}
}
