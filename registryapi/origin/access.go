package origin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
)

// Operation names of the access questions, passed to Observer.
const (
	opPrivacyProbe = "privacy_probe"
	opAccessCheck  = "access_check"
)

// Object is what an access check asks the origin about in a repository: a manifest by tag or
// digest, a blob, or the tag list. Make one with ManifestObject, BlobObject or TagsObject.
type Object struct {
	path   string // below /v2/<repo>/
	method string
}

// ManifestObject is the manifest ref (a tag or a digest) of a repository.
func ManifestObject(ref string) Object {
	return Object{path: "manifests/" + ref, method: http.MethodHead}
}

// BlobObject is blob d of a repository.
func BlobObject(d digest.Digest) Object {
	return Object{path: "blobs/" + d.String(), method: http.MethodHead}
}

// TagsObject is the repository's tag list (asked with GET n=1: registries need not answer HEAD).
func TagsObject() Object { return Object{path: "tags/list", method: http.MethodGet} }

// Privacy is the answer of a privacy probe.
type Privacy struct {
	// Private is true when the origin refuses anonymous reads of the repository.
	Private bool
	// Challenge is the origin's WWW-Authenticate header for an anonymous request to the
	// repository, to relay to clients ("" when the origin sent none).
	Challenge string
}

// Probe asks whether reg serves repo anonymously: an anonymous HEAD of its tag list (no body, and
// not a manifest or blob request: registries check access before the method, so a 405 is an
// answer too), and, when the origin answers with a bearer challenge, the same with an anonymous
// token, as a client without credentials would. Any answer but 401 and 403 means public. It does
// not use the node's own credentials. Errors wrap errdefs.ErrUnavailable when the origin cannot
// answer.
func (c *Client) Probe(ctx context.Context, reg *Registry, repo string) (p Privacy, err error) {
	if err := checkRepo(repo); err != nil {
		return Privacy{}, err
	}
	status := 0
	defer c.observe(reg, opPrivacyProbe, time.Now(), &status, &err)
	u := reg.endpoint("/v2/"+reg.remote(repo)+"/tags/list", nil).String()
	raw := c.unauthenticated(reg)
	status, challenge, err := c.ask(ctx, raw, http.MethodHead, u, credential.Credential{})
	if err != nil {
		return Privacy{}, err
	}
	switch {
	case status != http.StatusUnauthorized && status != http.StatusForbidden:
		return Privacy{}, nil
	case !strings.HasPrefix(strings.ToLower(challenge), "bearer"):
		return Privacy{Private: true, Challenge: challenge}, nil
	}
	// A token server may hand out anonymous tokens (Docker Hub's public repositories).
	actx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	rt, terr := transport.NewWithContext(actx, reg.name, authn.Anonymous, raw,
		[]string{"repository:" + reg.remote(repo) + ":" + transport.PullScope})
	if terr != nil {
		if !isRefusal(terr) {
			return Privacy{}, fmt.Errorf("origin: anonymous token: %v: %w", terr, errdefs.ErrUnavailable)
		}
		return Privacy{Private: true, Challenge: challenge}, nil
	}
	status2, _, err := c.ask(ctx, rt, http.MethodHead, u, credential.Credential{})
	if err != nil {
		return Privacy{}, err
	}
	if status2 == http.StatusUnauthorized || status2 == http.StatusForbidden {
		return Privacy{Private: true, Challenge: challenge}, nil
	}
	return Privacy{}, nil
}

// isRefusal reports whether a token exchange failed because the token server refused.
func isRefusal(err error) bool {
	var terr *transport.Error
	if ok := asTransportError(err, &terr); ok {
		return terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden
	}
	return false
}

// Check asks reg, with the client's credential and not the node's, for obj in repo: the status
// (2xx: granted and obj exists; 404: granted, obj unknown to repo; 401 or 403: refused) and, on a
// refusal, the origin's challenge. A redirect counts as granted. Errors wrap
// errdefs.ErrUnavailable when the origin cannot answer.
func (c *Client) Check(ctx context.Context, reg *Registry, repo string, obj Object, cred credential.Credential) (status int, challenge string, err error) {
	if err := checkRepo(repo); err != nil {
		return 0, "", err
	}
	defer c.observe(reg, opAccessCheck, time.Now(), &status, &err)
	var q url.Values
	if obj.method == http.MethodGet {
		q = url.Values{"n": {"1"}}
	}
	u := reg.endpoint("/v2/"+reg.remote(repo)+"/"+obj.path, q).String()
	return c.ask(ctx, c.unauthenticated(reg), obj.method, u, cred)
}

// ask makes one request through rt without following redirects and returns its status and
// WWW-Authenticate header. 5xx (after the retries under rt) and network failures are errors
// wrapping errdefs.ErrUnavailable.
func (c *Client) ask(ctx context.Context, rt http.RoundTripper, method, u string, cred credential.Credential) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", strings.Join(oci.ManifestTypes(), ", "))
	if !cred.IsZero() {
		req.Header.Set("Authorization", cred.Header())
	}
	hc := &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("origin: %v: %w", err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests {
		return resp.StatusCode, "", fmt.Errorf("origin answered %d: %w", resp.StatusCode, errdefs.ErrUnavailable)
	}
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), nil
}

// Ping asks reg's base endpoint (/v2/) anonymously and returns its status and challenge: a
// registry whose base endpoint wants Basic credentials serves nothing anonymously.
func (c *Client) Ping(ctx context.Context, reg *Registry) (status int, challenge string, err error) {
	defer c.observe(reg, opPrivacyProbe, time.Now(), &status, &err)
	return c.ask(ctx, c.unauthenticated(reg), http.MethodGet, reg.endpoint("/v2/", nil).String(), credential.Credential{})
}
