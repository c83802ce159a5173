package seed_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/seedauth"
	"github.com/shoal-oci/shoal/seed"
)

// startLiar starts a bare libp2p node joined to the cluster through boot, with key as its seed
// authority key (nil: none), to speak the seed protocol by hand.
func startLiar(t *testing.T, key ed25519.PrivateKey, boot []string) *p2p.Node {
	t.Helper()
	n, err := p2p.New(p2p.Config{DataDir: t.TempDir(), ListenAddrs: []string{loopback}, Bootstrap: boot,
		Seed: key != nil, SeedAuthorityKey: key})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; n.Close() })
	waitFor(t, "the liar to join", func() bool { return n.RoutingTableSize() > 0 })
	return n
}

type wireResponse struct {
	OK       bool   `json:"ok"`
	Unpinned bool   `json:"unpinned"`
	Error    string `json:"error"`
}

// seedCall sends one request of the seed protocol (/shoal/seed/1) as it is on the wire.
func seedCall(t *testing.T, from *p2p.Node, to peer.ID, req any) wireResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := from.Host().NewStream(ctx, to, "/shoal/seed/1")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(st).Encode(req); err != nil {
		t.Fatal(err)
	}
	_ = st.CloseWrite()
	var resp wireResponse
	if err := json.NewDecoder(io.LimitReader(st, 1<<20)).Decode(&resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// A seed's pins change only at the word of seeds the operator authorized. A peer holding the
// swarm key but no seed authorization (here it even advertises the seed role, with a key the
// cluster does not trust) sends unpin, and a pin of another image dated 9999, over the real seed
// protocol: both are refused and the pin stays. An authorized seed's pin dated 9999 is taken,
// with its date clamped to now, so that it cannot outrank every later pin for good.
func TestSeedProtocolOnlyFromAuthorizedSeeds(t *testing.T) {
	o := startOrigin(t)
	imgA, err := devregistry.Image([]int64{4000}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	imgB, err := devregistry.Image([]int64{5000}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	ref := o.Host() + "/team/app:v1"
	if err := devregistry.Push(ref, imgA); err != nil {
		t.Fatal(err)
	}
	if err := devregistry.Push(o.Host()+"/team/app:other", imgB); err != nil {
		t.Fatal(err)
	}
	hA, _ := imgA.Digest()
	hB, _ := imgB.Digest()
	dA, dB := digest.Digest(hA.String()), digest.Digest(hB.String())
	s := startSeed(t, seed.Config{Agent: agentConfig(t, []string{o.URL()}, nil)})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := pins.NewClient(s.host, "")
	if _, err := admin.Pin(ctx, pins.PreheatRequest{Ref: ref}, nil); err != nil {
		t.Fatalf("pin add: %v", err)
	}
	list, err := admin.Pins(ctx)
	if err != nil || len(list) != 1 || list[0].Digest != dA {
		t.Fatalf("pins %+v (%v), want one of %s", list, err, dA)
	}
	pinned := list[0]
	forged := pinned
	forged.Digest, forged.Digests, forged.Created = dB, nil, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

	rogueKey, err := seedauth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	liar := startLiar(t, rogueKey, s.Node().Addrs())
	if resp := seedCall(t, liar, s.Node().ID(), map[string]any{"op": "unpin", "key": pinned.Key()}); resp.OK || resp.Unpinned {
		t.Errorf("an unauthorized peer's unpin was accepted: %+v", resp)
	}
	if resp := seedCall(t, liar, s.Node().ID(), map[string]any{"op": "pin", "pin": forged}); resp.OK {
		t.Errorf("an unauthorized peer's pin was accepted: %+v", resp)
	}
	if resp := seedCall(t, liar, s.Node().ID(), map[string]any{"op": "holdings", "keys": []string{pinned.Key()}}); resp.OK {
		t.Errorf("an unauthorized peer was told the seed's pins: %+v", resp)
	}
	if list, err := admin.Pins(ctx); err != nil || len(list) != 1 || list[0].Digest != dA {
		t.Fatalf("after the unauthorized peer's requests the pins are %+v (%v), want the one of %s", list, err, dA)
	}

	// An authorized seed (a peer with a statement of the trusted authority) may replicate a
	// pin, but not from the future.
	other := startLiar(t, authority, s.Node().Addrs())
	if resp := seedCall(t, other, s.Node().ID(), map[string]any{"op": "pin", "pin": forged}); !resp.OK {
		t.Fatalf("an authorized seed's pin was refused: %+v", resp)
	}
	var got pins.Pin
	waitFor(t, "the replicated pin", func() bool {
		list, err := admin.Pins(ctx)
		if err != nil || len(list) != 1 || list[0].Digest != dB {
			return false
		}
		got = list[0]
		return true
	})
	if got.Created.After(time.Now()) {
		t.Fatalf("a pin dated %s was recorded with its date", got.Created)
	}
	if resp := seedCall(t, other, s.Node().ID(), map[string]any{"op": "unpin", "key": pinned.Key()}); !resp.OK || !resp.Unpinned {
		t.Fatalf("an authorized seed's unpin: %+v", resp)
	}
}
