package transfer

import (
	"context"
	"errors"
	"io"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// A peer that takes every request and never answers: each operation of the client ends, as
// unavailable, at its own deadline, with no deadline of the caller's.
func TestSilentPeerEveryOpEnds(t *testing.T) {
	server, client := newHost(t), newHost(t)
	stop := make(chan struct{})
	server.SetStreamHandler(ProtocolID, func(s network.Stream) {
		_, _ = io.Copy(io.Discard, io.LimitReader(s, 16<<10))
		<-stop
		_ = s.Reset()
	})
	t.Cleanup(func() { close(stop) })
	if err := client.Connect(context.Background(), peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	c, p, d := NewClient(client), server.ID(), digest.FromString("x")
	ctx := context.Background()
	ops := map[string]func() error{
		"get":     func() error { _, err := c.Get(ctx, p, d, 0, -1); return err },
		"chunk":   func() error { _, err := c.GetChunk(ctx, p, d, 0, 1<<20, true); return err },
		"map":     func() error { _, err := c.Map(ctx, p, d, 1<<20); return err },
		"tag":     func() error { _, err := c.Tags(ctx, p, "docker.io", "library/alpine", "latest"); return err },
		"resolve": func() error { _, err := c.Resolve(ctx, p, "docker.io", "library/alpine", "latest", nil); return err },
		"pull":    func() error { return c.Pull(ctx, p, "docker.io", "library/alpine", d) },
	}
	var wg sync.WaitGroup
	for name, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := op(); !errors.Is(err, errdefs.ErrUnavailable) {
				t.Errorf("%s from a silent peer: %v, want it to end as unavailable", name, err)
			}
		}()
	}
	wg.Wait()
}

type opsSeen struct {
	mu  sync.Mutex
	ops map[string]int
}

func (o *opsSeen) Served(op string, _ int, _ int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops[op]++
}

// Operation names a peer makes up are counted as "other": metric labels come from a fixed set.
func TestMadeUpOpsAreOther(t *testing.T) {
	server, client := newHost(t), newHost(t)
	seen := &opsSeen{ops: map[string]int{}}
	NewServer(server, NewMemoryContent(), nil, seen)
	ctx := context.Background()
	if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	c := NewClient(client)
	for i := range 50 {
		_, _, _, err := c.roundTrip(ctx, server.ID(), request{Op: "op-" + string(rune('a'+i%26)) + string(rune('a'+i/26))})
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("a made-up op: %v, want invalid", err)
		}
	}
	if _, err := c.Tags(ctx, server.ID(), "docker.io", "library/alpine", "latest"); err != nil {
		t.Fatal(err)
	}
	// The server counts a request once its answer is out: wait (bounded) for all 51.
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen.mu.Lock()
		total := 0
		for _, n := range seen.ops {
			total += n
		}
		ops := maps.Clone(seen.ops)
		seen.mu.Unlock()
		if total >= 51 || time.Now().After(deadline) {
			if len(ops) != 2 || ops["other"] != 50 || ops["tag"] != 1 {
				t.Fatalf("ops counted: %v, want other 50 and tag 1", ops)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
