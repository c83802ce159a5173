package seed_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/seed"
	"github.com/shoal-oci/shoal/test/testutil"
)

// A pin with two replicas among three seeds: the count is reached, and repaired from the
// cluster alone (the origin is gone) when a holder dies; a pull still works.
func TestReplicasRepaired(t *testing.T) {
	o := startOrigin(t)
	img, err := devregistry.Image([]int64{2 << 20, 3000}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	ref := o.Host() + "/team/pinned:v1"
	if err := devregistry.Push(ref, img); err != nil {
		t.Fatal(err)
	}
	regs := []string{o.URL()}
	cfg := func(boot []string) seed.Config {
		return seed.Config{Agent: agentConfig(t, regs, boot), RepairInterval: 200 * time.Millisecond}
	}
	s1 := startSeed(t, cfg(nil))
	s2 := startSeed(t, cfg(s1.Node().Addrs()))
	s3 := startSeed(t, cfg(s1.Node().Addrs()))
	seeds := []*node{s1, s2, s3}
	for _, s := range seeds {
		waitFor(t, "every seed to see the three", func() bool { return len(s.Node().Seeds(context.Background())) == 3 })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := pins.NewClient(s1.host, "").Pin(ctx, pins.PreheatRequest{Ref: ref, Replicas: 2}, nil); err != nil {
		t.Fatalf("pin add: %v", err)
	}
	holders := func(nodes ...*node) int {
		n := 0
		for _, s := range nodes {
			pins, err := pins.NewClient(s.host, "").Pins(ctx)
			if err == nil && len(pins) == 1 && pins[0].Ref == ref && pins[0].Replicas == 2 {
				n++
			}
		}
		return n
	}
	waitFor(t, "a second seed to hold the pin", func() bool { return holders(seeds...) == 2 })
	time.Sleep(time.Second) // five repair rounds: the count must stay at two, not grow
	if n := holders(seeds...); n != 2 {
		t.Fatalf("%d seeds hold a pin asked on two", n)
	}

	// The origin goes, then the seed the pin was asked of: the survivor that holds it has the
	// third seed fetch it from the cluster.
	o.Close()
	s1.stop()
	waitFor(t, "the replica count to be repaired", func() bool { return holders(s2, s3) == 2 })

	a := startAgent(t, agentConfig(t, regs, s2.Node().Addrs()))
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	got := pullImage(t, a.host+"/team/pinned@"+d.String())
	for l, b := range testutil.LayerBytes(t, img) {
		if !bytes.Equal(got[l], b) {
			t.Errorf("layer %s differs", l)
		}
	}
}
