package seed_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/seed"
	"github.com/shoal-oci/shoal/test/testutil"
)

// Two seeds preheat a multi-platform image at once: every blob comes from the origin once. Then
// the origin stops, and a new agent pulls the image by tag and by digest through the cluster.
func TestPreheatThenOriginDown(t *testing.T) {
	o := startOrigin(t)
	idx, err := devregistry.Index([]int64{3 << 20, 1 << 20, 5000}, "linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	ref := o.Host() + "/team/app:v1"
	if err := devregistry.Push(ref, idx); err != nil {
		t.Fatal(err)
	}
	regs := []string{o.URL()}
	s1 := startSeed(t, seed.Config{Agent: agentConfig(t, regs, nil)})
	s2 := startSeed(t, seed.Config{Agent: agentConfig(t, regs, s1.Node().Addrs())})
	waitFor(t, "the seeds to find each other", func() bool {
		return len(s1.Node().Seeds(context.Background())) == 2 && len(s2.Node().Seeds(context.Background())) == 2
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]pins.Progress, 2)
	errs := make([]error, 2)
	reports := make([][]pins.Progress, 2)
	for i, s := range []*node{s1, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = pins.NewClient(s.host, "").Preheat(ctx, pins.PreheatRequest{Ref: ref, AllPlatforms: true},
				func(p pins.Progress) { reports[i] = append(reports[i], p) })
		}()
	}
	wg.Wait()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var blobs []string
	var total int64
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			blobs = append(blobs, l.Digest.String())
			total += l.Size
		}
	}
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("seed %d: preheat: %v", i, errs[i])
		}
		p := results[i]
		if p.Event != "done" || !p.Pinned || p.Manifests != 3 || p.Blobs != len(blobs) || p.BytesDone != total {
			t.Errorf("seed %d: last report %+v; want done, pinned, 3 manifests, %d blobs, %d bytes", i, p, len(blobs), total)
		}
		if first := reports[i][0]; first.Event != "resolved" || first.Bytes != total {
			t.Errorf("seed %d: first report %+v; want resolved with the total", i, first)
		}
	}
	for _, b := range blobs {
		if n := o.BlobGets(b); n != 1 {
			t.Errorf("origin served blob %s %d times to two seeds preheating at once; want 1", b, n)
		}
	}
	for i, s := range []*node{s1, s2} {
		pins, err := pins.NewClient(s.host, "").Pins(ctx)
		if err != nil || len(pins) != 1 || pins[0].Ref != ref || len(pins[0].Digests) != 3+len(blobs) {
			t.Fatalf("seed %d: pins %+v, %v; want the image pinned", i, pins, err)
		}
	}

	// The origin goes away; a new agent pulls by tag and by digest, byte for byte.
	o.Close()
	acfg := agentConfig(t, regs, s1.Node().Addrs())
	acfg.TagTTL = 100 * time.Millisecond // the seed's resolution, from the preheat, is older than that
	a := startAgent(t, acfg)
	waitFor(t, "the agent to find the seeds", func() bool { return len(a.Node().Seeds(context.Background())) == 2 })
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		want := testutil.LayerBytes(t, img)
		plat := desc.Platform.String()
		byDigest := pullImage(t, a.host+"/team/app@"+desc.Digest.String())
		for d, b := range want {
			if !bytes.Equal(byDigest[d], b) {
				t.Errorf("%s: layer %s pulled by digest differs", plat, d)
			}
		}
		_ = plat
	}
	// By tag: the index, resolved from the seeds' last resolution while the origin is down.
	idxDigest, _ := idx.Digest()
	got := pullIndexDigest(t, a.host+"/team/app:v1")
	if got != idxDigest.String() {
		t.Errorf("tag resolved to %s while the origin is down; want %s", got, idxDigest)
	}
	// The seed answered from its last resolution: the agent counts the answer as stale.
	if n := counter(t, a, "shoal_stale_tag_resolutions_total"); n < 1 {
		t.Errorf("stale tag resolutions counted by the agent: %v; want at least 1", n)
	}
}

// A preheat that cannot start is refused with a clear error; one that fails midway reports it.
func TestPreheatErrors(t *testing.T) {
	o := startOrigin(t)
	s := startSeed(t, seed.Config{Agent: agentConfig(t, []string{o.URL()}, nil)})
	c := pins.NewClient(s.host, "")
	ctx := context.Background()
	for _, tc := range []struct {
		req  pins.PreheatRequest
		want string
	}{
		{pins.PreheatRequest{Ref: "UPPER/case"}, "400"},
		{pins.PreheatRequest{Ref: o.Host() + "/x:1", Platforms: []string{"linux"}}, "platform"},
		{pins.PreheatRequest{Ref: o.Host() + "/x:1", Platforms: []string{"linux/amd64"}, AllPlatforms: true}, "exclusive"},
		{pins.PreheatRequest{Ref: "elsewhere.example/x:1"}, "not configured"},
		{pins.PreheatRequest{Ref: o.Host() + "/no/such:tag"}, "not found"},
	} {
		_, err := c.Preheat(ctx, tc.req, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("preheat %+v: %v; want an error mentioning %q", tc.req, err, tc.want)
		}
	}
	if err := c.Unpin(ctx, o.Host()+"/no/such:tag"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unpin of nothing: %v; want 404", err)
	}
}

// With an admin token configured, preheat needs it; pulls do not.
func TestAdminToken(t *testing.T) {
	o := startOrigin(t)
	img, err := devregistry.Image([]int64{1000}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	ref := o.Host() + "/team/tok:v1"
	if err := devregistry.Push(ref, img); err != nil {
		t.Fatal(err)
	}
	cfg := seed.Config{Agent: agentConfig(t, []string{o.URL()}, nil)}
	cfg.Agent.AdminToken = "s3cret-token"
	s := startSeed(t, cfg)
	ctx := context.Background()
	req := pins.PreheatRequest{Ref: ref, Platforms: []string{"linux/amd64"}}
	for _, tok := range []string{"", "wrong"} {
		if _, err := pins.NewClient(s.host, tok).Preheat(ctx, req, nil); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("preheat with token %q: %v; want 401", tok, err)
		}
	}
	if _, err := pins.NewClient(s.host, "s3cret-token").Preheat(ctx, req, nil); err != nil {
		t.Fatalf("preheat with the token: %v", err)
	}
	d, _ := img.Digest()
	pullImage(t, s.host+"/team/tok@"+d.String())
}
