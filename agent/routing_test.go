package agent_test

import (
	"io"
	"net/http"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/devregistry"
)

// getManifest GETs a manifest path (with its query) from an agent and returns the status and
// the digest of the body.
func getManifestAt(t *testing.T, host, pathAndQuery string) (int, digest.Digest) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+host+pathAndQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, digest.FromBytes(body)
}

func manifestDigest(t *testing.T, img v1.Image) digest.Digest {
	t.Helper()
	b, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.FromBytes(b)
}

// An alias serves a registry name from another host, under a repository prefix: ns=docker.io
// and every other spelling of Docker Hub are served from the origin's hub/ project, and so is a
// /v2/docker.io/ path prefix; the alias's own host is not a name the node answers to.
func TestRegistryAliasServesItsName(t *testing.T) {
	o := startOrigin(t)
	img, err := devregistry.Image([]int64{70_000, 3000}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "hub/library/app:v1", img)
	want := manifestDigest(t, img)
	nd := startAgent(t, t.TempDir(), "docker.io="+o.URL()+"/hub")

	for _, ns := range []string{"docker.io", "index.docker.io", "registry-1.docker.io"} {
		if status, got := getManifestAt(t, nd.host, "/v2/library/app/manifests/v1?ns="+ns); status != http.StatusOK || got != want {
			t.Errorf("ns=%s: status %d, manifest %s; want 200 and the origin's %s", ns, status, got, want)
		}
	}
	if status, _ := getManifestAt(t, nd.host, "/v2/library/app/manifests/v1?ns="+o.Host()); status != http.StatusNotFound {
		t.Errorf("ns=<the alias's host>: status %d, want 404: only the alias's name is served", status)
	}
	got, err := remote.Image(ref(t, nd.host+"/docker.io/library/app:v1"))
	if err != nil {
		t.Fatalf("pull of <agent>/docker.io/library/app:v1: %v", err)
	}
	sameImage(t, got, img)
}

// Nodes that reach one registry through different caches key its tags by the registry's name:
// a node whose own cache is down takes the tag a seed resolved through another cache, and the
// content from the cluster.
func TestRegistryAliasesAgreeOnTags(t *testing.T) {
	cacheA, cacheB := startOrigin(t), startOrigin(t)
	img, err := devregistry.Image([]int64{1<<20 + 5}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, cacheA, "proxy/library/app:v1", img)
	want := manifestDigest(t, img)
	s := startTrusting(t, t.TempDir(), "docker.io="+cacheA.URL()+"/proxy", true, 0)
	b := startTrusting(t, t.TempDir(), "docker.io="+cacheB.URL(), false, 0, s.Node().Addrs()...)
	for _, nd := range []*node{s, b} {
		waitFor(t, func() bool { return nd.Node().RoutingTableSize() > 0 }, "the routing table to fill")
	}
	// The seed pulls the whole image through its cache.
	got, err := remote.Image(ref(t, s.host+"/docker.io/library/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, got, img)
	cacheB.Close()
	waitProvided(t, b, append([]string{want.String()}, blobDigests(t, img)...)...)

	if status, got := getManifestAt(t, b.host, "/v2/library/app/manifests/v1?ns=docker.io"); status != http.StatusOK || got != want {
		t.Fatalf("tag through the other node's alias, its cache down: status %d, manifest %s; want 200 and %s", status, got, want)
	}
	got, err = remote.Image(ref(t, b.host+"/docker.io/library/app:v1"))
	if err != nil {
		t.Fatalf("pull through the other node, its cache down: %v", err)
	}
	sameImage(t, got, img)
}

// A pull path's first component selects a served registry when it looks like a host; the rest is
// the repository. ns wins over it, and a repository of the default registry whose first
// component is a served registry's name is reached with the default registry's own prefix.
func TestPathPrefixRouting(t *testing.T) {
	def, other := startOrigin(t), startOrigin(t)
	images := map[string]v1.Image{}
	for _, loc := range []struct {
		o       *devregistry.Registry
		key     string
		repoTag string
	}{
		{def, "def:", "test/app:v1"}, {def, "def:", "ghcr.io/test/app:v1"}, {def, "def:", "quay.io/test/app:v1"},
		{other, "other:", "test/app:v1"},
	} {
		img, err := devregistry.Image([]int64{int64(2000 + len(images))}, false, "linux/amd64")
		if err != nil {
			t.Fatal(err)
		}
		push(t, loc.o, loc.repoTag, img)
		images[loc.key+loc.repoTag] = img
	}
	nd := startAgent(t, t.TempDir(), def.URL(), "ghcr.io="+other.URL())

	for _, tc := range []struct {
		name, path string
		from       string // the images key whose manifest must come back, "" for a 404
	}{
		{name: "no prefix is the default registry", path: "/v2/test/app/manifests/v1", from: "def:test/app:v1"},
		{name: "the default registry's host", path: "/v2/" + def.Host() + "/test/app/manifests/v1", from: "def:test/app:v1"},
		{name: "an alias name", path: "/v2/ghcr.io/test/app/manifests/v1", from: "other:test/app:v1"},
		{name: "prefix in another case", path: "/v2/GHCR.io/test/app/manifests/v1", from: "other:test/app:v1"},
		{name: "prefix and the same ns", path: "/v2/ghcr.io/test/app/manifests/v1?ns=ghcr.io", from: "other:test/app:v1"},
		{name: "ns wins over another prefix", path: "/v2/ghcr.io/test/app/manifests/v1?ns=" + def.Host(), from: "def:ghcr.io/test/app:v1"},
		{name: "a served name shadows the default's repository", path: "/v2/ghcr.io/test/app/manifests/v1", from: "other:test/app:v1"},
		{name: "the default's prefix reaches it", path: "/v2/" + def.Host() + "/ghcr.io/test/app/manifests/v1", from: "def:ghcr.io/test/app:v1"},
		{name: "a host not served is part of the repository", path: "/v2/quay.io/test/app/manifests/v1", from: "def:quay.io/test/app:v1"},
		{name: "the alias's host is not a name", path: "/v2/" + other.Host() + "/test/app/manifests/v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, got := getManifestAt(t, nd.host, tc.path)
			if tc.from == "" {
				if status == http.StatusOK {
					t.Fatalf("GET %s: 200, want an error", tc.path)
				}
				return
			}
			if want := manifestDigest(t, images[tc.from]); status != http.StatusOK || got != want {
				t.Fatalf("GET %s: status %d, manifest %s; want 200 and %s (%s)", tc.path, status, got, want, tc.from)
			}
		})
	}
	// A whole image, blobs included, through ggcr's client with a prefixed repository. (A
	// host:port prefix is not a valid reference for ggcr or containers/image clients, so they
	// reach such a registry through an alias name.)
	got, err := remote.Image(ref(t, nd.host+"/ghcr.io/test/app:v1"))
	if err != nil {
		t.Fatalf("pull of <agent>/ghcr.io/test/app:v1: %v", err)
	}
	sameImage(t, got, images["other:test/app:v1"])
}
