package origin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Passthrough is an origin answer the mirror relays as is: any 2xx or 4xx status, with its body.
type Passthrough struct {
	Status      int
	ContentType string
	// Link is the pagination header, rewritten so that links to the origin's host become relative
	// and the client comes back to the mirror for the next page.
	Link string
	// FiltersApplied is the referrers answer's OCI-Filters-Applied header: "artifactType" when the
	// list was filtered by the requested artifactType.
	FiltersApplied string
	// Body holds at most oci.MaxManifestSize bytes; a longer body is an error wrapping errdefs.ErrTooLarge.
	Body []byte
}

// Tags lists the tags of repo on reg. n <= 0 leaves the page size to the origin; last is the
// tag to continue after, or "". Statuses 2xx and 4xx come back as a Passthrough; 5xx and network
// failures are errors wrapping errdefs.ErrUnavailable.
func (c *Client) Tags(ctx context.Context, reg *Registry, repo string, n int, last string) (*Passthrough, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	q := url.Values{}
	if n > 0 {
		q.Set("n", strconv.Itoa(n))
	}
	if last != "" {
		q.Set("last", last)
	}
	return c.passthrough(ctx, reg, repo, opTags, reg.endpoint("/v2/"+reg.remote(repo)+"/tags/list", q).String())
}

// Referrers lists the manifests that refer to dgst in repo on reg, filtered by artifactType when
// it is not "". Statuses are handled as for Tags; an origin without the referrers API answers 404.
func (c *Client) Referrers(ctx context.Context, reg *Registry, repo string, dgst digest.Digest, artifactType string) (*Passthrough, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	if err := checkDigest(dgst); err != nil {
		return nil, err
	}
	q := url.Values{}
	if artifactType != "" {
		q.Set("artifactType", artifactType)
	}
	return c.passthrough(ctx, reg, repo, opReferrers, reg.endpoint("/v2/"+reg.remote(repo)+"/referrers/"+dgst.String(), q).String())
}

func (c *Client) passthrough(ctx context.Context, reg *Registry, repo, op, u string) (p *Passthrough, err error) {
	status := 0
	defer c.observe(reg, op, time.Now(), &status, &err)
	resp, err := c.send(ctx, reg, repo, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	if s := resp.StatusCode; (s < 200 || s >= 300) && (s < 400 || s >= 500) {
		return nil, check(resp) // no status is wanted: this always yields the origin's error
	}
	body, err := readLimited(resp)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, repo, err)
	}
	return &Passthrough{
		Status:         resp.StatusCode,
		ContentType:    resp.Header.Get("Content-Type"),
		Link:           localLinks(resp.Header.Get("Link"), reg),
		FiltersApplied: resp.Header.Get("OCI-Filters-Applied"),
		Body:           body,
	}, nil
}

// localLinks rewrites each <URL> in a Link header that points at reg's host to its path and
// query, without the alias's repository prefix.
func localLinks(link string, reg *Registry) string {
	host := reg.Host()
	var b strings.Builder
	for {
		start := strings.IndexByte(link, '<')
		if start < 0 {
			break
		}
		n := strings.IndexByte(link[start:], '>')
		if n < 0 {
			break
		}
		end := start + n
		target := link[start+1 : end]
		if u, err := url.Parse(target); err == nil && u.IsAbs() && strings.EqualFold(u.Host, host) {
			target = u.RequestURI()
		}
		if reg.prefix != "" {
			if rest, ok := strings.CutPrefix(target, "/v2/"+reg.prefix+"/"); ok {
				target = "/v2/" + rest
			}
		}
		b.WriteString(link[:start+1])
		b.WriteString(target)
		link = link[end:]
	}
	b.WriteString(link)
	return b.String()
}
