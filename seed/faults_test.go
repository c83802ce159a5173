package seed_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"

	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/seed"
	"github.com/shoal-oci/shoal/test/testutil"
)

// A seed whose origin is down still takes pushes to new repositories: crane copies an image from
// another registry into it (a HEAD of the manifest first, as crane does, then the push), and the
// image is pulled back whole.
func TestPushWithOriginDown(t *testing.T) {
	o := startOrigin(t)
	s := startSeed(t, seed.Config{Agent: agentConfig(t, []string{o.URL()}, nil)})
	src := startOrigin(t)
	img, err := devregistry.Image([]int64{3000, 1 << 20}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	if err := devregistry.Push(src.Host()+"/pushed/app:v2", img); err != nil {
		t.Fatal(err)
	}
	o.Close()
	// What crane asks first: a repository the seed does not hold yet is unknown (404), not
	// unavailable for want of the origin.
	resp, err := http.Head("http://" + s.host + "/v2/pushed/app/manifests/v2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of a manifest in a new repository with the origin down: %d, want 404", resp.StatusCode)
	}
	if err := crane.Copy(src.Host()+"/pushed/app:v2", s.host+"/pushed/app:v2", crane.Insecure); err != nil {
		t.Fatalf("crane copy into the seed with its origin down: %v", err)
	}
	got := pullImage(t, s.host+"/pushed/app:v2")
	for d, b := range testutil.LayerBytes(t, img) {
		if !bytes.Equal(got[d], b) {
			t.Errorf("layer %s differs", d)
		}
	}
}
