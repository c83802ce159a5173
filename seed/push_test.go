package seed_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/seed"
	"github.com/shoal-oci/shoal/test/testutil"
)

// An image pushed to a seed with no origin is pinned, replicated to a second seed, and pulled by
// tag through an agent with no origin; the tag survives the seed it was pushed to. The
// repository's first component looks like a registry host, as in a mirror's layout: hosted
// names are names, never parsed for a registry.
func TestPushedImageWithoutOrigin(t *testing.T) {
	cfg := func(boot []string) seed.Config {
		c := seed.Config{Agent: agentConfig(t, nil, boot), RepairInterval: 200 * time.Millisecond, Replicas: 2}
		return c
	}
	s1 := startSeed(t, cfg(nil))
	s2 := startSeed(t, cfg(s1.Node().Addrs()))
	for _, s := range []*node{s1, s2} {
		waitFor(t, "the seeds to see each other", func() bool { return len(s.Node().Seeds(context.Background())) == 2 })
	}
	img, err := devregistry.Image([]int64{2 << 20, 1234}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(s1.host+"/mirror.example/site/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push to the seed: %v", err)
	}
	d, _ := img.Digest()
	ctx := context.Background()
	waitFor(t, "the pushed tag to be pinned on both seeds", func() bool {
		for _, s := range []*node{s1, s2} {
			pins, err := pins.NewClient(s.host, "").Pins(ctx)
			if err != nil || len(pins) != 1 || pins[0].Ref != "mirror.example/site/app:v1" || !pins[0].Hosted || pins[0].Digest.String() != d.String() {
				return false
			}
		}
		return true
	})

	a := startAgent(t, agentConfig(t, nil, s1.Node().Addrs()))
	waitFor(t, "the agent to find the seeds", func() bool { return len(a.Node().Seeds(ctx)) == 2 })
	want := testutil.LayerBytes(t, img)
	check := func(got map[string][]byte) {
		t.Helper()
		for l, b := range want {
			if !bytes.Equal(got[l], b) {
				t.Errorf("layer %s differs", l)
			}
		}
	}
	check(pullImage(t, a.host+"/mirror.example/site/app:v1"))

	// The seed that took the push goes away: the replica answers for the tag.
	stopped := time.Now()
	s1.stop()
	t.Logf("the first seed stopped in %s", time.Since(stopped))
	// Pulled at once, before the new agent has joined: it waits for the cluster.
	b := startAgent(t, agentConfig(t, nil, s2.Node().Addrs()))
	check(pullImage(t, b.host+"/mirror.example/site/app:v1"))
	// The surviving seed serves the replica on its own /v2 too.
	check(pullImage(t, s2.host+"/mirror.example/site/app:v1"))
}

// A tag pushed again names the new image everywhere: replication never brings the old one back.
func TestRepushedTagWins(t *testing.T) {
	cfg := func(boot []string) seed.Config {
		return seed.Config{Agent: agentConfig(t, nil, boot), RepairInterval: 100 * time.Millisecond, Replicas: 2}
	}
	s1 := startSeed(t, cfg(nil))
	s2 := startSeed(t, cfg(s1.Node().Addrs()))
	for _, s := range []*node{s1, s2} {
		waitFor(t, "the seeds to see each other", func() bool { return len(s.Node().Seeds(context.Background())) == 2 })
	}
	ctx := context.Background()
	pinnedEverywhere := func(d string) bool {
		for _, s := range []*node{s1, s2} {
			pins, err := pins.NewClient(s.host, "").Pins(ctx)
			if err != nil || len(pins) != 1 || pins[0].Digest.String() != d {
				return false
			}
		}
		return true
	}
	ref, _ := name.ParseReference(s1.host+"/site/app:v1", name.Insecure)
	var last string
	for i := range 2 {
		img, err := devregistry.Image([]int64{1000 + int64(i)}, false, "linux/amd64")
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		last = d.String()
		waitFor(t, "push "+last+" to be pinned on both seeds", func() bool { return pinnedEverywhere(last) })
	}
	time.Sleep(time.Second) // ten repair rounds
	if !pinnedEverywhere(last) {
		t.Fatal("a repair round brought the tag's old image back")
	}
	a := startAgent(t, agentConfig(t, nil, s2.Node().Addrs()))
	waitFor(t, "the agent to find the seeds", func() bool { return len(a.Node().Seeds(ctx)) == 2 })
	if got := pullIndexDigest(t, a.host+"/site/app:v1"); got != last {
		t.Fatalf("the agent resolved the tag to %s, want the last push %s", got, last)
	}
}

// An agent whose origin denies an unknown repository (as Docker Hub and GHCR answer one, 401)
// finds a tag pushed to a seed in the hosted namespace; under the origin's name, the origin's
// denial stands: a pushed repository never answers for an upstream's.
func TestPushedTagThroughAgentWhoseOriginDenies(t *testing.T) {
	denying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("WWW-Authenticate", `Basic realm="denying"`)
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
	}))
	defer denying.Close()
	s := startSeed(t, seed.Config{Agent: agentConfig(t, nil, nil)})
	img, err := devregistry.Image([]int64{5000}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(s.host+"/site/denied:v1", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, agentConfig(t, []string{denying.URL}, s.Node().Addrs()))
	waitFor(t, "the agent to find the seed", func() bool { return len(a.Node().Seeds(context.Background())) == 1 })
	d, _ := img.Digest()
	if got, status := manifestDigest(t, a.host, "site/denied", "v1", agent.DefaultHostedRegistry); got != d.String() {
		t.Fatalf("hosted namespace: %d %q, want the pushed %s", status, got, d)
	}
	// Without ns (the agent's first upstream) and under the origin's name: the origin's denial.
	for _, ns := range []string{"", strings.TrimPrefix(denying.URL, "http://")} {
		if got, status := manifestDigest(t, a.host, "site/denied", "v1", ns); status != http.StatusUnauthorized && status != http.StatusForbidden {
			t.Fatalf("ns=%q: %d %q, want the origin's denial", ns, status, got)
		}
	}
}
