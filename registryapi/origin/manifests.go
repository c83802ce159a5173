package origin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
)

// Manifest is a manifest as the origin served it.
type Manifest struct {
	// MediaType comes from Content-Type, else from the body's mediaType field.
	MediaType string
	// Digest is computed from Body.
	Digest digest.Digest
	Body   []byte
}

// Descriptor describes a manifest without its body.
type Descriptor struct {
	MediaType string
	Digest    digest.Digest
	Size      int64
}

// GetManifest fetches manifest ref (a tag or a digest) of repo from reg, sending accept as the
// Accept header. Digest is the sha256 of the body, or uses the algorithm of ref when ref is a
// digest, in which case a body that does not match is an error wrapping errdefs.ErrDigestMismatch.
// A body over oci.MaxManifestSize is an error wrapping errdefs.ErrTooLarge.
func (c *Client) GetManifest(ctx context.Context, reg *Registry, repo, ref string, accept []string) (m *Manifest, err error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	want, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	status := 0
	defer c.observe(reg, opManifest, time.Now(), &status, &err)
	resp, err := c.send(ctx, reg, repo, http.MethodGet, manifestURL(reg, repo, ref), accept)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	if err := check(resp, http.StatusOK); err != nil {
		return nil, err
	}
	body, err := readLimited(resp)
	if err != nil {
		return nil, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	m = &Manifest{MediaType: mediaType(resp.Header), Body: body}
	if want == "" {
		m.Digest = digest.SHA256.FromBytes(body)
	} else if m.Digest = want.Algorithm().FromBytes(body); m.Digest != want {
		return nil, fmt.Errorf("manifest %s@%s: origin sent %s: %w", repo, want, m.Digest, errdefs.ErrDigestMismatch)
	}
	if m.MediaType == "" {
		// A body without the field leaves the type empty. A field of the wrong type elsewhere
		// does not matter: decoding carries on past it.
		var v oci.Manifest
		_ = json.Unmarshal(body, &v)
		m.MediaType = v.MediaType
	}
	return m, nil
}

// HeadManifest resolves manifest ref (a tag or a digest) of repo on reg without fetching it.
// It needs the origin's Docker-Content-Digest and Content-Length headers; when either is missing
// the error wraps errdefs.ErrUnsupported and the caller should fall back to GetManifest.
func (c *Client) HeadManifest(ctx context.Context, reg *Registry, repo, ref string, accept []string) (desc Descriptor, err error) {
	if err := checkRepo(repo); err != nil {
		return Descriptor{}, err
	}
	want, err := parseRef(ref)
	if err != nil {
		return Descriptor{}, err
	}
	status := 0
	defer c.observe(reg, opManifestHead, time.Now(), &status, &err)
	resp, err := c.send(ctx, reg, repo, http.MethodHead, manifestURL(reg, repo, ref), accept)
	if err != nil {
		return Descriptor{}, err
	}
	status = resp.StatusCode
	if err := check(resp, http.StatusOK); err != nil {
		return Descriptor{}, err
	}
	resp.Body.Close()
	h := resp.Header.Get("Docker-Content-Digest")
	if h == "" || resp.ContentLength < 0 {
		return Descriptor{}, fmt.Errorf("manifest %s:%s: origin gave no digest or size on HEAD: %w", repo, ref, errdefs.ErrUnsupported)
	}
	d, err := digest.Parse(h)
	if err != nil {
		return Descriptor{}, fmt.Errorf("manifest %s:%s: origin sent Docker-Content-Digest %q: %w", repo, ref, h, errdefs.ErrUnsupported)
	}
	if want != "" && d != want {
		return Descriptor{}, fmt.Errorf("manifest %s@%s: origin says %s: %w", repo, want, d, errdefs.ErrDigestMismatch)
	}
	if resp.ContentLength > oci.MaxManifestSize {
		return Descriptor{}, fmt.Errorf("manifest %s:%s: %d bytes: %w", repo, ref, resp.ContentLength, errdefs.ErrTooLarge)
	}
	return Descriptor{MediaType: mediaType(resp.Header), Digest: d, Size: resp.ContentLength}, nil
}

func manifestURL(reg *Registry, repo, ref string) string {
	return reg.endpoint("/v2/"+reg.remote(repo)+"/manifests/"+ref, nil).String()
}

// readLimited reads resp's body, failing with errdefs.ErrTooLarge beyond oci.MaxManifestSize.
func readLimited(resp *http.Response) ([]byte, error) {
	if resp.ContentLength > oci.MaxManifestSize {
		return nil, fmt.Errorf("%d bytes: %w", resp.ContentLength, errdefs.ErrTooLarge)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > oci.MaxManifestSize {
		return nil, fmt.Errorf("over %d bytes: %w", oci.MaxManifestSize, errdefs.ErrTooLarge)
	}
	return b, nil
}

// mediaType returns the Content-Type without parameters, or "" when there is none.
func mediaType(h http.Header) string {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}
