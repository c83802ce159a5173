// Package benchruntime plays a node's container runtime in the benchmarks. It makes the image
// the runtimes pull (random layers written as an origin's blob files, a config, and an OCI
// manifest pushed under a tag) and pulls it as a runtime does: the manifest by tag through a
// registry API, then every blob, each checked against its digest, recording when the bytes
// arrived.
package benchruntime

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
	// Repository and Tag name the image in the origin and in every pull.
	Repository = "bench/app"
	Tag        = "v1"
	// ManifestType is the image manifest's media type, and what a pull accepts.
	ManifestType = "application/vnd.oci.image.manifest.v1+json"
	configType   = "application/vnd.oci.image.config.v1+json"
	layerType    = "application/vnd.oci.image.layer.v1.tar"
)

// Descriptor names one blob of the image, as the manifest does.
type Descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// Image is the generated test image: a config and L layers of random (incompressible) bytes,
// stored as blob files under the origin's directory.
type Image struct {
	Config   Descriptor
	Layers   []Descriptor
	Manifest []byte
	Digest   string // the manifest's
}

// LayerBytes is S, the sum of the layer sizes.
func (im *Image) LayerBytes() int64 {
	var n int64
	for _, l := range im.Layers {
		n += l.Size
	}
	return n
}

// Bytes is what one pull downloads besides the manifest: the config and the layers.
func (im *Image) Bytes() int64 { return im.LayerBytes() + im.Config.Size }

// MakeImage writes size bytes in n layers (the remainder in the last) plus a config into
// dir/sha256/<hex>, two layers at a time (this machine has two cores), for an origin that serves
// blobs from files (benchorigin); Push then puts the manifest.
func MakeImage(dir string, size int64, n int) (*Image, error) {
	im := &Image{Layers: make([]Descriptor, n)}
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
			im.Layers[i] = Descriptor{MediaType: layerType, Digest: d, Size: sz}
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
	for i, l := range im.Layers {
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
	im.Config = Descriptor{MediaType: configType, Digest: d, Size: int64(len(cfg))}
	im.Manifest, _ = json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": ManifestType, "config": im.Config, "layers": im.Layers,
	})
	sum := sha256.Sum256(im.Manifest)
	im.Digest = "sha256:" + hex.EncodeToString(sum[:])
	return im, nil
}

// writeBlob writes b as dir/sha256/<hex> and returns its digest.
func writeBlob(dir string, b []byte) (string, error) {
	sum := sha256.Sum256(b)
	h := hex.EncodeToString(sum[:])
	if err := os.MkdirAll(filepath.Join(dir, "sha256"), 0o755); err != nil {
		return "", err
	}
	return "sha256:" + h, os.WriteFile(filepath.Join(dir, "sha256", h), b, 0o644)
}

// Push puts the manifest under Repository:Tag at the origin (the blobs are already in the
// origin's files).
func (im *Image) Push(ctx context.Context, originURL string) error {
	url := fmt.Sprintf("%s/v2/%s/manifests/%s", originURL, Repository, Tag)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(im.Manifest))
	req.Header.Set("Content-Type", ManifestType)
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
