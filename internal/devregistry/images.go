package devregistry

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image builds an image of random, incompressible layers of the given sizes, with OCI media
// types, or Docker schema 2 ones when docker is true, for the given platform ("" = none).
func Image(layerSizes []int64, docker bool, platform string) (v1.Image, error) {
	layerType, manifestType, configType := types.OCILayer, types.OCIManifestSchema1, types.OCIConfigJSON
	if docker {
		layerType, manifestType, configType = types.DockerLayer, types.DockerManifestSchema2, types.DockerConfigJSON
	}
	img := mutate.MediaType(empty.Image, manifestType)
	img = mutate.ConfigMediaType(img, configType)
	for _, size := range layerSizes {
		l, err := random.Layer(size, layerType)
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	if platform != "" {
		p, err := v1.ParsePlatform(platform)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// Index builds a multi-platform OCI index of images with random layers, one per platform.
func Index(layerSizes []int64, platforms ...string) (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	for _, p := range platforms {
		img, err := Image(layerSizes, false, p)
		if err != nil {
			return nil, err
		}
		plat, _ := v1.ParsePlatform(p)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	return mutate.AppendManifests(idx, adds...), nil
}

// Push writes an image or index to ref ("host:port/repo:tag") over plain HTTP.
func Push(ref string, content any) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	switch c := content.(type) {
	case v1.Image:
		return remote.Write(r, c)
	case v1.ImageIndex:
		return remote.WriteIndex(r, c)
	default:
		return fmt.Errorf("devregistry: cannot push %T", content)
	}
}
