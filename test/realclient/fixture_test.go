package realclient

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

// fixture is an origin registry seeded with the three kinds of image the tests pull.
type fixture struct {
	origin *origins.DockerRegistry

	oci    testutil.Content // test/oci:v1, an OCI image for linux/amd64
	docker testutil.Content // test/docker:v1, a Docker schema 2 image for linux/amd64

	index     string                      // test/multi:v1, an OCI index for linux/amd64 and linux/arm64
	platforms map[string]testutil.Content // its images by platform
}

const (
	layerSize = 512 << 10
	layers    = 2
)

// newFixture starts docker-registry and pushes fresh random images to it.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := &fixture{origin: origins.StartDockerRegistry(t)}

	oci := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), layers, layerSize)
	testutil.Push(ctx, t, f.ref("test/oci:v1"), oci)
	f.oci = testutil.ImageContent(t, oci)

	docker := testutil.NewImage(t, testutil.Docker, testutil.Linux("amd64"), layers, layerSize)
	testutil.Push(ctx, t, f.ref("test/docker:v1"), docker)
	f.docker = testutil.ImageContent(t, docker)

	idx := testutil.NewIndex(t, layers, layerSize, testutil.Linux("amd64"), testutil.Linux("arm64"))
	testutil.Push(ctx, t, f.ref("test/multi:v1"), idx)
	f.index, f.platforms = testutil.IndexContent(t, idx)
	if len(f.platforms) != 2 {
		t.Fatalf("index has platforms %v, want linux/amd64 and linux/arm64", f.platforms)
	}
	return f
}

// ref returns a reference to repo (with :tag or @digest) on the origin.
func (f *fixture) ref(repoAndRef string) string { return f.origin.Addr + "/" + repoAndRef }

// all returns the manifest and blob digests of c, which a pull of c must have fetched.
func all(cs ...testutil.Content) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Manifest)
		out = append(out, c.Blobs...)
	}
	return out
}

// blobCount is the number of distinct config and layer blobs in cs.
func blobCount(cs ...testutil.Content) int {
	n := 0
	for _, c := range cs {
		n += len(c.Blobs)
	}
	return n
}
