package p2p

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// storedFor lists which of keys the node holds a provider record of p for.
func storedFor(t *testing.T, n *Node, p peer.ID, keys []cid.Cid) int {
	t.Helper()
	held := 0
	for _, c := range keys {
		provs, err := n.dht.ProviderStore().GetProviders(context.Background(), c.Hash())
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(provs, func(ai peer.AddrInfo) bool { return ai.ID == p }) {
			held++
		}
	}
	return held
}

// A member floods a node with provider records through the real DHT protocol (ADD_PROVIDER for
// keys it makes up): past its quota the records are refused, while an honest member's records
// are still stored and found.
func TestProviderRecordQuota(t *testing.T) {
	const quota, flood = 20, 60
	victim := newTestNode(t, Config{MaxProviderRecordsPerPeer: quota})
	run(t, victim)
	liar := newTestNode(t, Config{Bootstrap: []string{victim.Addrs()[0]}})
	run(t, liar)
	honest := newTestNode(t, Config{Bootstrap: []string{victim.Addrs()[0]}})
	run(t, honest)
	waitFor(t, 5*time.Second, "the members to join", func() bool {
		return liar.RoutingTableSize() > 0 && honest.RoutingTableSize() > 0
	})

	var keys []cid.Cid
	for range flood {
		c, err := DigestCID(randomDigest(t))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, c)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		// The DHT's own provide: ADD_PROVIDER to the closest peers, the victim among them.
		err = liar.dht.Provide(ctx, c, true)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Every record has reached the victim once it stored or refused all of them.
	waitFor(t, 10*time.Second, "the victim to take or refuse every record", func() bool {
		return storedFor(t, victim, liar.ID(), keys)+int(victim.records.Refused()) >= flood
	})
	if n := storedFor(t, victim, liar.ID(), keys); n > quota {
		t.Fatalf("the victim stores %d of the member's %d records, past its quota of %d", n, flood, quota)
	}

	d := randomDigest(t)
	if err := honest.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	c, _ := DigestCID(d)
	waitFor(t, 10*time.Second, "the victim to store the honest member's record", func() bool {
		return storedFor(t, victim, honest.ID(), []cid.Cid{c}) == 1
	})
	infos, err := victim.FindProviders(context.Background(), d)
	if err != nil || !slices.ContainsFunc(infos, func(ai peer.AddrInfo) bool { return ai.ID == honest.ID() }) {
		t.Fatalf("the honest provider is not found: %v, %v", infos, err)
	}
}
