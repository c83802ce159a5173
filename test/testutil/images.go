package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Format picks the media types of a generated image.
type Format int

const (
	// OCI is an OCI image manifest with an OCI config and gzip layers.
	OCI Format = iota
	// Docker is a Docker schema 2 manifest with a Docker config and gzip layers.
	Docker
)

func (f Format) mediaTypes() (manifest, config, layer types.MediaType) {
	if f == Docker {
		return types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer
	}
	return types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer
}

// Linux returns the platform linux/arch.
func Linux(arch string) v1.Platform { return v1.Platform{OS: "linux", Architecture: arch} }

// NewImage returns an image of random gzip tar layers (each holding one file of size random
// bytes) whose config names platform, so clients that match platforms (containerd) accept it.
func NewImage(t testing.TB, f Format, platform v1.Platform, layers int, size int64) v1.Image {
	t.Helper()
	mt, cmt, lmt := f.mediaTypes()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, mt), cmt)
	for range layers {
		l, err := random.Layer(size, lmt)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = platform.OS, platform.Architecture, platform.Variant
	cfg.Config.Cmd = []string{"/bin/true"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	return img
}

// NewIndex returns an OCI image index with one random OCI image per platform; each entry's
// descriptor carries its platform and nothing beyond mediaType, digest and size, as the multi-arch
// indexes on public registries do.
func NewIndex(t testing.TB, layers int, size int64, platforms ...v1.Platform) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img := NewImage(t, OCI, p, layers, size)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	// ggcr fills in each entry's artifactType from the image's config media type. skopeo 1.9 does
	// not know that field and re-serialises such an index when copying it, which changes its digest
	// even with no mirror involved; so drop it.
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	im = im.DeepCopy()
	for i := range im.Manifests {
		im.Manifests[i].ArtifactType = ""
	}
	raw, err := json.Marshal(im)
	if err != nil {
		t.Fatal(err)
	}
	return plainIndex{base: idx, raw: raw}
}

// plainIndex is an index whose manifest bytes are given; its children come from base.
type plainIndex struct {
	base v1.ImageIndex
	raw  []byte
}

var _ v1.ImageIndex = plainIndex{}

func (p plainIndex) MediaType() (types.MediaType, error)         { return p.base.MediaType() }
func (p plainIndex) Image(h v1.Hash) (v1.Image, error)           { return p.base.Image(h) }
func (p plainIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) { return p.base.ImageIndex(h) }

func (p plainIndex) RawManifest() ([]byte, error) { return p.raw, nil }
func (p plainIndex) Size() (int64, error)         { return int64(len(p.raw)), nil }

func (p plainIndex) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(p.raw))
	return h, err
}

func (p plainIndex) IndexManifest() (*v1.IndexManifest, error) {
	return v1.ParseIndexManifest(bytes.NewReader(p.raw))
}

// Push writes an image or index (and everything it references) to ref, e.g.
// "127.0.0.1:5000/test/app:v1", over plain HTTP.
func Push(ctx context.Context, t testing.TB, ref string, content remote.Taggable) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	switch c := content.(type) {
	case v1.ImageIndex:
		err = remote.WriteIndex(r, c, remote.WithContext(ctx))
	case v1.Image:
		err = remote.Write(r, c, remote.WithContext(ctx))
	default:
		t.Fatalf("cannot push %T", content)
	}
	if err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

// Content lists what a client needs to pull one image: its manifest digest and the digests of
// its config and layers.
type Content struct {
	Manifest string
	Blobs    []string
}

// ImageContent returns the digests that make up img.
func ImageContent(t testing.TB, img v1.Image) Content {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	c := Content{Manifest: d.String(), Blobs: []string{m.Config.Digest.String()}}
	for _, l := range m.Layers {
		c.Blobs = append(c.Blobs, l.Digest.String())
	}
	return c
}

// LayerBytes reads every layer of img (pulled through a registry or built locally), by digest.
func LayerBytes(t testing.TB, img v1.Image) map[string][]byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("layer %s: %v", d, err)
		}
		out[d.String()] = b
	}
	return out
}

// IndexContent returns the index's digest and the content of each image in it by platform
// ("linux/amd64").
func IndexContent(t testing.TB, idx v1.ImageIndex) (string, map[string]Content) {
	t.Helper()
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Content{}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		out[desc.Platform.String()] = ImageContent(t, img)
	}
	return d.String(), out
}
