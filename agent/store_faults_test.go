package agent_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/gc"
	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

// A preheat larger than the room left under --max-store-size (the rest is pinned) does not evict
// its own first blobs to make room for its last ones before its pin is recorded: the pin names
// only content the store holds, after GC has run. An image larger than the limit itself is
// refused before a byte of it is fetched.
func TestPreheatHoldsItsContentFromGC(t *testing.T) {
	o := startOrigin(t)
	const mib = 1 << 20
	old, err := devregistry.Image([]int64{4 * mib}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/old:v1", old)
	// Eight layers fetched three at a time: the first commit long before the last start.
	big, err := devregistry.Image([]int64{mib, mib, mib, mib, mib, mib, mib, mib}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/big:v1", big)
	huge, err := devregistry.Image([]int64{7 * mib, 7 * mib}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/huge:v1", huge)

	n := startAgentConfig(t, agent.Config{DataDir: t.TempDir(), Registries: []string{o.URL()}, ChunkSize: mib, StoreMaxBytes: 10 * mib})
	p := n.Pins(1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	quiet := func(pins.Progress) {}
	if _, err := p.Add(ctx, pins.PreheatRequest{Ref: o.Host() + "/test/old:v1"}, quiet); err != nil {
		t.Fatal(err)
	}
	// 4 MiB pinned and 8 MiB more: 2 MiB over the limit, and only the new image to evict.
	pin, err := p.Add(ctx, pins.PreheatRequest{Ref: o.Host() + "/test/big:v1"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	st := n.Store()
	check := func(when string) {
		t.Helper()
		for _, d := range pin.Digests {
			if _, err := st.Stat(d); err != nil {
				t.Errorf("%s, the pin names %s, which the store does not hold: %v", when, d, err)
			}
		}
	}
	check("once pinned")
	// A pass of the collector as the node runs it, over the limit: the pin keeps everything.
	if _, err := gc.Collect(ctx, st, gc.Policy{High: 10 * mib, Low: 9 * mib, Keep: st.Pins().Pinned}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	check("after GC")
	if _, err := p.Add(ctx, pins.PreheatRequest{Ref: o.Host() + "/test/huge:v1"}, quiet); !errors.Is(err, errdefs.ErrNoSpace) {
		t.Errorf("pinning an image larger than the store's limit = %v, want ErrNoSpace", err)
	}
	if got := n.Status().Store.Pending; got != 0 {
		t.Errorf("%d bytes pending after the refused preheat", got)
	}
}
