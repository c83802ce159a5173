package seed_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/seed"
	"github.com/shoal-oci/shoal/test/testutil"
)

// A preheated seed with the origin down is the only source of an image, and its uplink the
// scarcest link: five agents pulling the image at once get it while the seed sends each chunk
// about once, the agents passing chunks on to each other (super-seeding). Counted in the bytes the
// seed's transfer server sent, not in time.
func TestSeedSendsEachChunkAboutOnce(t *testing.T) {
	o := startOrigin(t)
	const layer = 24 << 20 // 24 chunks of 1 MiB
	img, err := devregistry.Image([]int64{layer}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	ref := o.Host() + "/team/big:v1"
	if err := devregistry.Push(ref, img); err != nil {
		t.Fatal(err)
	}
	regs := []string{o.URL()}
	// Every node gets a link of the same rate, so that a chunk takes a while to cross one and
	// requests overlap as they do in a rollout.
	const rate = 8 << 20
	limit := func(c seed.Config) seed.Config {
		c.Agent.MaxUploadRate, c.Agent.MaxDownloadRate = rate, rate
		return c
	}
	s := startSeed(t, limit(seed.Config{Agent: agentConfig(t, regs, nil)}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := pins.NewClient(s.host, "").Preheat(ctx, pins.PreheatRequest{Ref: ref}, nil); err != nil {
		t.Fatalf("preheat: %v", err)
	}
	o.Close()

	var agents []*node
	for range 5 {
		cfg := agentConfig(t, regs, s.Node().Addrs())
		cfg.MaxUploadRate, cfg.MaxDownloadRate = rate, rate
		agents = append(agents, startAgent(t, cfg))
	}
	for _, a := range agents {
		waitFor(t, "the agents to find the seed", func() bool { return len(a.Node().Seeds(context.Background())) == 1 })
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	want := testutil.LayerBytes(t, img)
	before := counter(t, s, "shoal_peer_served_bytes_total")
	var wg sync.WaitGroup
	got := make([]map[string][]byte, len(agents))
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = pullImage(t, a.host+"/team/big@"+d.String())
		}()
	}
	wg.Wait()
	for i := range agents {
		for dg, b := range want {
			if !bytes.Equal(got[i][dg], b) {
				t.Fatalf("agent %d: layer %s differs", i, dg)
			}
		}
	}
	sent := counter(t, s, "shoal_peer_served_bytes_total") - before
	copies := sent / layer
	t.Logf("the seed sent %.0f bytes, %.2f copies of the layer, to %d agents", sent, copies, len(agents))
	if copies > 1.2 {
		t.Errorf("the seed sent %.2f copies of the image to %d agents; want about one (at most 1.2)", copies, len(agents))
	}
}
