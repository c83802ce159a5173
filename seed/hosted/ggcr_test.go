package hosted

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/shoal-oci/shoal/test/testutil"
)

// TestGGCRImageRoundTrip pushes an image with ggcr's remote.Write, as crane does, and pulls it
// back byte for byte.
func TestGGCRImageRoundTrip(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	ctx := context.Background()
	img, err := random.Image(300<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	ref, err := name.ParseReference(s.host+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("remote.Write: %v", err)
	}
	// A second push finds everything there (HEAD) and rewrites only the manifest.
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("second remote.Write: %v", err)
	}
	got, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("remote.Image: %v", err)
	}
	sameImage(t, img, got)

	// Another repository: ggcr mounts the layers from the first.
	ref2, _ := name.ParseReference(s.host+"/team/copy:v1", name.Insecure)
	if err := remote.Write(ref2, got, remote.WithContext(ctx)); err != nil {
		t.Fatalf("remote.Write to another repository: %v", err)
	}
	got2, err := remote.Image(ref2, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, img, got2)

	// An index of two images, pushed and pulled with remote.WriteIndex / remote.Index.
	img2, _ := random.Image(100<<10, 1)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: mutate.MediaType(img2, types.OCIManifestSchema1), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	iref, _ := name.ParseReference(s.host+"/team/multi:v1", name.Insecure)
	if err := remote.WriteIndex(iref, idx, remote.WithContext(ctx)); err != nil {
		t.Fatalf("remote.WriteIndex: %v", err)
	}
	gotIdx, err := remote.Index(iref, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	wantRaw, _ := idx.RawManifest()
	gotRaw, _ := gotIdx.RawManifest()
	if !bytes.Equal(wantRaw, gotRaw) {
		t.Error("the index differs")
	}
}

// sameImage compares manifests, configs and every layer's compressed bytes.
func sameImage(t *testing.T, want, got v1.Image) {
	t.Helper()
	wm, _ := want.RawManifest()
	gm, err := got.RawManifest()
	if err != nil || !bytes.Equal(wm, gm) {
		t.Fatalf("manifest differs (%v)", err)
	}
	wc, _ := want.RawConfigFile()
	gc, err := got.RawConfigFile()
	if err != nil || !bytes.Equal(wc, gc) {
		t.Fatalf("config differs (%v)", err)
	}
	wl, gl := testutil.LayerBytes(t, want), testutil.LayerBytes(t, got)
	if len(wl) != len(gl) {
		t.Fatalf("layers: %d vs %d", len(wl), len(gl))
	}
	for d, b := range wl {
		if !bytes.Equal(gl[d], b) {
			t.Errorf("layer %s differs", d)
		}
	}
}

// TestGGCRArtifact pushes a non-image artifact (artifactType set, the empty config) that refers
// to an image, pulls it back, and finds it through the referrers API.
func TestGGCRArtifact(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	ctx := context.Background()
	img, _ := random.Image(10<<10, 1)
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	ref, _ := name.ParseReference(s.host+"/team/app:v1", name.Insecure)
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	subjectDesc, err := remote.Head(ref)
	if err != nil {
		t.Fatal(err)
	}

	const artifactType = "application/vnd.example.sbom.v1+json"
	art := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	art = mutate.ConfigMediaType(art, types.MediaType("application/vnd.oci.empty.v1+json"))
	art, err = mutate.AppendLayers(art, static.NewLayer([]byte(`{"sbom":"contents"}`), types.MediaType("application/spdx+json")))
	if err != nil {
		t.Fatal(err)
	}
	art = mutate.Annotations(art, map[string]string{"org.example.kind": "sbom"}).(v1.Image)
	withSubject, ok := mutate.Subject(art, *subjectDesc).(v1.Image)
	if !ok {
		t.Fatal("mutate.Subject of an image is not an image")
	}
	artImg := &artifactTyped{Image: withSubject, artifactType: artifactType}
	ad, err := artImg.Digest()
	if err != nil {
		t.Fatal(err)
	}
	aref, _ := name.ParseReference(s.host+"/team/app@"+ad.String(), name.Insecure)
	if err := remote.Write(aref, artImg, remote.WithContext(ctx)); err != nil {
		t.Fatalf("remote.Write of the artifact: %v", err)
	}
	got, err := remote.Image(aref, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, artImg, got)
	gm, _ := got.Manifest()
	if gm.Config.MediaType != "application/vnd.oci.empty.v1+json" {
		t.Errorf("config media type %s", gm.Config.MediaType)
	}

	dig, _ := name.NewDigest(s.host+"/team/app@"+subjectDesc.Digest.String(), name.Insecure)
	idx, err := remote.Referrers(dig, remote.WithContext(ctx), remote.WithFilter("artifactType", artifactType))
	if err != nil {
		t.Fatalf("remote.Referrers: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != ad || im.Manifests[0].ArtifactType != artifactType ||
		im.Manifests[0].Annotations["org.example.kind"] != "sbom" {
		t.Errorf("referrers %+v, want the artifact %s", im.Manifests, ad)
	}
}

// artifactTyped sets the manifest's artifactType, which ggcr's mutate has no helper for.
type artifactTyped struct {
	v1.Image
	artifactType string
}

func (a *artifactTyped) Manifest() (*v1.Manifest, error) {
	m, err := a.Image.Manifest()
	if err != nil {
		return nil, err
	}
	m = m.DeepCopy()
	m.ArtifactType = a.artifactType
	return m, nil
}

func (a *artifactTyped) RawManifest() ([]byte, error) {
	m, err := a.Manifest()
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

func (a *artifactTyped) Digest() (v1.Hash, error) {
	b, err := a.RawManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	h, _, err := v1.SHA256(bytes.NewReader(b))
	return h, err
}

func (a *artifactTyped) Size() (int64, error) {
	b, err := a.RawManifest()
	return int64(len(b)), err
}
