package origin

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"
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
	return reg.endpoint("/v2/"+repo+"/blobs/"+dgst.String(), nil).String()
}
