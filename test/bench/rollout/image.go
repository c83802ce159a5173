package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchblob"
)

const (
	repoName     = "bench/app"
	tagName      = "v1"
	manifestType = "application/vnd.oci.image.manifest.v1+json"
	configType   = "application/vnd.oci.image.config.v1+json"
	layerType    = "application/vnd.oci.image.layer.v1.tar"
)

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// image is the generated test image: a config and L layers of random (incompressible) bytes,
// stored as blob files under the origin's directory.
type image struct {
	config   descriptor
	layers   []descriptor
	manifest []byte
	digest   string // the manifest's
}

// layerBytes is S, the sum of the layer sizes.
func (im *image) layerBytes() int64 {
	var n int64
	for _, l := range im.layers {
		n += l.Size
	}
	return n
}

// makeImage writes size bytes in n layers (the remainder in the last) plus a config into
// dir/sha256/<hex>, two layers at a time (this machine has two cores).
func makeImage(dir string, size int64, n int) (*image, error) {
	im := &image{layers: make([]descriptor, n)}
	each := size / int64(n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 2)
	for i := range n {
		sz := each
		if i == n-1 {
			sz = size - each*int64(n-1)
		}
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			d, err := benchblob.Make(dir, sz, uint64(i)+1)
			im.layers[i] = descriptor{MediaType: layerType, Digest: d, Size: sz}
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	diffIDs := make([]string, n)
	for i, l := range im.layers {
		diffIDs[i] = l.Digest // the layers are not compressed: a diff ID is the layer's digest
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"created": time.Now().UTC().Format(time.RFC3339),
		"config":  map[string]any{"Cmd": []string{"/app"}},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	d, err := writeBlob(dir, cfg)
	if err != nil {
		return nil, err
	}
	im.config = descriptor{MediaType: configType, Digest: d, Size: int64(len(cfg))}
	im.manifest, _ = json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": manifestType, "config": im.config, "layers": im.layers,
	})
	sum := sha256.Sum256(im.manifest)
	im.digest = "sha256:" + hex.EncodeToString(sum[:])
	return im, nil
}

func writeBlob(dir string, b []byte) (string, error) {
	sum := sha256.Sum256(b)
	h := hex.EncodeToString(sum[:])
	if err := os.MkdirAll(filepath.Join(dir, "sha256"), 0o755); err != nil {
		return "", err
	}
	return "sha256:" + h, os.WriteFile(filepath.Join(dir, "sha256", h), b, 0o644)
}

// push puts the manifest under repoName:tagName (the blobs are already in the origin's files).
func (im *image) push(ctx context.Context, originURL string) error {
	url := fmt.Sprintf("%s/v2/%s/manifests/%s", originURL, repoName, tagName)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(im.manifest))
	req.Header.Set("Content-Type", manifestType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("PUT %s: %s: %s", url, resp.Status, b)
	}
	return nil
}
