package seed_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/seed"
	"github.com/shoal-oci/shoal/test/testutil"
)

// A stock seed holds a pushed repository with the name and tag of an upstream one, and other
// content: a request naming the upstream (its ns) gets the upstream's image, through the seed and
// through an agent, with the origin up and down; one naming the hosted registry gets the pushed
// image; a push, which names no registry, lands in the hosted namespace; and an agent pulls the
// hosted image with the origin down.
func TestPushedRepositoryNeverShadowsUpstream(t *testing.T) {
	o := startOrigin(t)
	upstream, err := devregistry.Image([]int64{3000, 1 << 20}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	if err := devregistry.Push(o.Host()+"/test/app:v1", upstream); err != nil {
		t.Fatal(err)
	}
	const ttl = 300 * time.Millisecond
	scfg := agentConfig(t, []string{o.URL()}, nil)
	scfg.TagTTL = ttl
	s := startSeed(t, seed.Config{Agent: scfg})

	// What a site pushes to its seed with crane's library: no ns, the upstream's repository and
	// tag, another image; and a tag the upstream does not have.
	pushed, err := devregistry.Image([]int64{4000, 1 << 20}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	only, err := devregistry.Image([]int64{5000}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	for ref, img := range map[string]v1.Image{"test/app:v1": pushed, "test/app:pushed-only": only} {
		r, err := name.ParseReference(s.host+"/"+ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, img); err != nil {
			t.Fatalf("push %s to the seed: %v", ref, err)
		}
	}
	acfg := agentConfig(t, []string{o.URL()}, s.Node().Addrs())
	acfg.TagTTL = ttl
	a := startAgent(t, acfg)
	waitFor(t, "the agent to find the seed", func() bool { return len(a.Node().Seeds(context.Background())) == 1 })

	upD, pushD, onlyD := digestOf(t, upstream), digestOf(t, pushed), digestOf(t, only)
	hosted := agent.DefaultHostedRegistry
	for _, tc := range []struct {
		name, node, ns, tag, want string
	}{
		{"the upstream through the seed", s.host, o.Host(), "v1", upD},
		{"the upstream through an agent", a.host, o.Host(), "v1", upD},
		{"the hosted registry at the seed", s.host, hosted, "v1", pushD},
		{"the hosted registry through an agent", a.host, hosted, "v1", pushD},
		{"no ns at the seed is the hosted namespace", s.host, "", "v1", pushD},
		{"a registry the seed does not mirror", s.host, "registry.example", "v1", ""},
		{"a pushed tag the upstream lacks, through the seed", s.host, o.Host(), "pushed-only", ""},
		{"a pushed tag the upstream lacks, through an agent", a.host, o.Host(), "pushed-only", ""},
		{"a pushed tag the upstream lacks, in the hosted namespace", a.host, hosted, "pushed-only", onlyD},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, status := manifestDigest(t, tc.node, "test/app", tc.tag, tc.ns)
			if tc.want == "" {
				if status != http.StatusNotFound {
					t.Fatalf("ns=%s %s: %d %s, want 404 (pushed %s and %s)", tc.ns, tc.tag, status, got, pushD, onlyD)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("ns=%s %s: %d %q, want %s (upstream %s, pushed %s)", tc.ns, tc.tag, status, got, tc.want, upD, pushD)
			}
		})
	}

	// The origin goes down. Past the tag TTL, the upstream's tag is its last known resolution,
	// never the pushed image; the hosted image is pulled whole through the agent.
	o.Close()
	time.Sleep(2 * ttl)
	for _, node := range []string{s.host, a.host} {
		if got, status := manifestDigest(t, node, "test/app", "v1", o.Host()); got != upD {
			t.Errorf("origin down, ns=<origin> at %s: %d %q, want the upstream's %s (pushed %s)", node, status, got, upD, pushD)
		}
	}
	ref, err := name.ParseReference(a.host+"/test/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithTransport(nsTransport{hosted}))
	if err != nil {
		t.Fatalf("pulling the hosted image through the agent, origin down: %v", err)
	}
	got := testutil.LayerBytes(t, img)
	for d, b := range testutil.LayerBytes(t, pushed) {
		if !bytes.Equal(got[d], b) {
			t.Errorf("layer %s of the hosted image differs", d)
		}
	}
}

// A hosted registry named like an upstream would let pushes shadow it: the node refuses to start.
func TestHostedRegistryMustNotBeAnUpstream(t *testing.T) {
	for _, tc := range []struct{ name, registry, hosted string }{
		{"same host", "http://127.0.0.1:1", "127.0.0.1:1"},
		{"another spelling of Docker Hub", "https://registry-1.docker.io", "docker.io"},
		{"upper case", "https://registry.example", "REGISTRY.example"},
		{"not a host", "https://registry.example", "registry.local/site"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := agentConfig(t, []string{tc.registry}, nil)
			cfg.HostedRegistry = tc.hosted
			if _, err := seed.New(seed.Config{Agent: cfg}); err == nil {
				t.Fatalf("a seed with upstream %s and hosted registry %s started", tc.registry, tc.hosted)
			}
		})
	}
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// manifestDigest GETs a manifest through a node's /v2, with ns when not empty, and returns the
// digest of what it answered and the status.
func manifestDigest(t *testing.T, host, repo, ref, ns string) (string, int) {
	t.Helper()
	u := "http://" + host + "/v2/" + repo + "/manifests/" + ref
	if ns != "" {
		u += "?ns=" + url.QueryEscape(ns)
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", resp.StatusCode
	}
	h, _, err := v1.SHA256(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return h.String(), resp.StatusCode
}

// nsTransport adds ?ns= to every request, as containerd does to a mirror's.
type nsTransport struct{ ns string }

func (n nsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	q := r.URL.Query()
	q.Set("ns", n.ns)
	r.URL.RawQuery = q.Encode()
	return http.DefaultTransport.RoundTrip(r)
}
