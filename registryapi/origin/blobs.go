package origin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// GetBlob streams blob dgst of repo from reg, following redirects (to object storage, typically;
// credentials are only ever sent to reg itself). size is the Content-Length, or -1 when the origin
// did not say. The caller must close the body. Reads fail with an error wrapping
// errdefs.ErrUnavailable when the origin stalls or the connection breaks. The bytes are not
// verified: the caller hashes them while storing.
func (c *Client) GetBlob(ctx context.Context, reg *Registry, repo string, dgst digest.Digest) (body io.ReadCloser, size int64, err error) {
	if err := checkRepo(repo); err != nil {
		return nil, 0, err
	}
	if err := checkDigest(dgst); err != nil {
		return nil, 0, err
	}
	status := 0
	defer c.observe(reg, opBlob, time.Now(), &status, &err)
	resp, err := c.send(ctx, reg, repo, http.MethodGet, blobURL(reg, repo, dgst), nil)
	if err != nil {
		return nil, 0, err
	}
	status = resp.StatusCode
	if err := check(resp, http.StatusOK); err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// GetBlobAt is GetBlob from byte off on, for resuming a fetch that another source began; size is
// the blob's size if known (-1 otherwise), returned size the whole blob's. Origins that ignore or
// refuse the Range are handled by skipping the first off bytes of a full answer.
func (c *Client) GetBlobAt(ctx context.Context, reg *Registry, repo string, dgst digest.Digest, off, size int64) (io.ReadCloser, int64, error) {
	if off <= 0 {
		return c.GetBlob(ctx, reg, repo, dgst)
	}
	if body, total, err := c.getRange(ctx, reg, repo, dgst, off, size-1); err == nil {
		return body, total, nil
	}
	body, total, err := c.GetBlob(ctx, reg, repo, dgst)
	if err != nil {
		return nil, 0, err
	}
	if _, err := io.CopyN(io.Discard, body, off); err != nil {
		body.Close()
		return nil, 0, fmt.Errorf("skipping to %d: %v: %w", off, err, errdefs.ErrUnavailable)
	}
	return body, total, nil
}

// GetBlobRange opens bytes [off, off+n) of blob dgst, n > 0. It fails with errdefs.ErrUnsupported
// when the origin does not answer with exactly that range (a registry that ignores Range).
func (c *Client) GetBlobRange(ctx context.Context, reg *Registry, repo string, dgst digest.Digest, off, n int64) (io.ReadCloser, int64, error) {
	if off < 0 || n <= 0 {
		return nil, 0, fmt.Errorf("range %d+%d: %w", off, n, errdefs.ErrInvalid)
	}
	return c.getRange(ctx, reg, repo, dgst, off, off+n-1)
}

// getRange asks for bytes off..last (or off.. when last < off, the size being unknown; some
// registries accept only closed ranges) and accepts only a matching 206.
func (c *Client) getRange(ctx context.Context, reg *Registry, repo string, dgst digest.Digest, off, last int64) (body io.ReadCloser, total int64, err error) {
	if err := checkRepo(repo); err != nil {
		return nil, 0, err
	}
	if err := checkDigest(dgst); err != nil {
		return nil, 0, err
	}
	status := 0
	defer c.observe(reg, opBlob, time.Now(), &status, &err)
	rng := fmt.Sprintf("bytes=%d-", off)
	if last >= off {
		rng += fmt.Sprint(last)
	}
	resp, err := c.sendWith(ctx, reg, repo, http.MethodGet, blobURL(reg, repo, dgst), nil, http.Header{"Range": {rng}})
	if err != nil {
		return nil, 0, err
	}
	status = resp.StatusCode
	var first, got int64
	if resp.StatusCode == http.StatusPartialContent {
		if _, perr := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &first, &got, &total); perr == nil && first == off && (last < off || got == last) {
			return resp.Body, total, nil
		}
	}
	resp.Body.Close()
	return nil, 0, fmt.Errorf("origin answered range %s with %d %q: %w", rng, resp.StatusCode, resp.Header.Get("Content-Range"), errdefs.ErrUnsupported)
}

// HeadBlob returns the size of blob dgst of repo on reg, or -1 when the origin did not say.
// A missing blob is an error wrapping errdefs.ErrNotFound.
func (c *Client) HeadBlob(ctx context.Context, reg *Registry, repo string, dgst digest.Digest) (size int64, err error) {
	if err := checkRepo(repo); err != nil {
		return 0, err
	}
	if err := checkDigest(dgst); err != nil {
		return 0, err
	}
	status := 0
	defer c.observe(reg, opBlobHead, time.Now(), &status, &err)
	resp, err := c.send(ctx, reg, repo, http.MethodHead, blobURL(reg, repo, dgst), nil)
	if err != nil {
		return 0, err
	}
	status = resp.StatusCode
	if err := check(resp, http.StatusOK); err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.ContentLength, nil
}

func blobURL(reg *Registry, repo string, dgst digest.Digest) string {
	return reg.endpoint("/v2/"+reg.remote(repo)+"/blobs/"+dgst.String(), nil).String()
}
