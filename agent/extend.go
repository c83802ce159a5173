package agent

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/registryapi"
)

// HostedTags answers what a tag of a hosted (pushed) repository names on this node: a seed's.
type HostedTags func(repo, tag string) (d digest.Digest, mediaType string, pushed time.Time, ok bool)

// Extension is what a seed adds to an agent. Install it with Extend before Run.
type Extension struct {
	// Frontend, when set, answers /v2 instead of the agent itself: a seed serves its hosted
	// repositories first and the agent's pipeline for the rest. It must fall back to the agent.
	Frontend registryapi.Backend
	// FrontendOptions are extra options of the /v2 server (registryapi.WithPush for a seed).
	FrontendOptions []registryapi.Option
	// HostedTags resolves tags of hosted repositories, for peers asking this node.
	HostedTags HostedTags
	// Keep reports content that garbage collection must keep besides pins (hosted content).
	Keep func(digest.Digest) bool
	// Routes are extra admin handlers by ServeMux pattern, served behind the admin check.
	Routes map[string]http.Handler
	// OnClose runs when the agent closes, after its fetches are cancelled and before the store
	// closes: the extension stops and waits for its background work there.
	OnClose func()
}

// Extend installs ext. It must be called before Run or Serve.
func (a *Agent) Extend(ext Extension) {
	a.ext = ext
}

// Announce advertises committed content to the cluster, in the background.
func (a *Agent) Announce(d digest.Digest) { a.announce(d) }

// Store returns the agent's content store.
func (a *Agent) Store() *store.Store { return a.store }

// Target selects the upstream for a registry host ("" is the first configured one) and a
// repository. With no upstream configured, the target has a nil Registry: content then comes
// from the cluster only.
func (a *Agent) Target(registry, repo string) (registryapi.Target, error) {
	reg, err := a.upstreams.Select(registry)
	if err != nil {
		return registryapi.Target{}, err
	}
	return registryapi.Target{Registry: reg, Repo: repo}, nil
}

// keep reports content GC must not evict: pinned or hosted.
func (a *Agent) keep(d digest.Digest) bool {
	if a.store.Pinned(d) {
		return true
	}
	return a.ext.Keep != nil && a.ext.Keep(d)
}

// errNoOrigin is what a fetch from the origin finds when no upstream is configured (a site that
// runs on its seeds alone).
var errNoOrigin = fmt.Errorf("no origin registry configured: %w", errdefs.ErrNotFound)

// hostOf is the target's registry host, "" for hosted content with no upstream.
func hostOf(t registryapi.Target) string {
	if t.Registry == nil {
		return ""
	}
	return t.Registry.Host()
}

// adminAllowed reports whether r may use the admin endpoints and the push API: with a token
// configured, it must carry it (as a bearer token, or as the password of basic auth, which is
// what `crane auth login` and skopeo's --creds send); with none, only when the agent listens on
// loopback alone.
func (a *Agent) adminAllowed(r *http.Request) (ok bool, why string) {
	token := a.cfg.AdminToken
	if token == "" {
		if a.exposed {
			return false, "admin endpoints and push are off: this node listens beyond loopback without --admin-token-file"
		}
		return true, ""
	}
	var got string
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = strings.TrimSpace(v)
	} else if _, pw, ok := r.BasicAuth(); ok {
		got = pw
	}
	if got == "" {
		return false, "authentication required: a bearer token from --admin-token-file"
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return false, "the admin token is not valid"
	}
	return true, ""
}

// isAdminRequest reports requests that need the admin token: the /shoal/v1 endpoints and /v2
// requests that change content. Pulls stay open to the local runtimes.
func isAdminRequest(r *http.Request) bool {
	if strings.HasPrefix(r.URL.Path, "/shoal/v1/") {
		// The status page is read-only, like /metrics.
		return !(r.URL.Path == "/shoal/v1/status" && (r.Method == http.MethodGet || r.Method == http.MethodHead))
	}
	if r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/") {
		return r.Method != http.MethodGet && r.Method != http.MethodHead ||
			strings.Contains(r.URL.Path, "/blobs/uploads")
	}
	return false
}

// denyAdmin answers an unauthorised admin or push request with an OCI error body: 401 with a
// challenge when a token would do (so registry clients send their credentials), else 403.
func denyAdmin(w http.ResponseWriter, why string, token bool) {
	status, code := http.StatusForbidden, "DENIED"
	if token {
		status, code = http.StatusUnauthorized, "UNAUTHORIZED"
		w.Header().Set("WWW-Authenticate", `Basic realm="shoal"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`+"\n", code, why)
}

// isLoopback reports whether a listener accepts only loopback connections.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// IsLoopbackAddress reports whether a host:port listen address binds loopback only.
func IsLoopbackAddress(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Logger returns the agent's logger.
func (a *Agent) Logger() *slog.Logger { return a.log }
