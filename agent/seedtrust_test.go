package agent_test

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/internal/tags"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/keys"
	"github.com/shoal-oci/shoal/p2p/seedauth"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// Attacks on tags by an admitted peer: a rogue seed, and a plain node that happens to be a tag's
// coordinator. A digest proves a manifest's integrity, not that the tag names it: each test
// fails without the rule that a tag's digest comes only from the origin, the node's own
// records, or a seed the operator authorized.

// seedAuthority is the tests' seed authority: authorized seeds sign with it, trusting nodes
// trust it.
var seedAuthority = func() ed25519.PrivateKey {
	k, err := seedauth.NewKey()
	if err != nil {
		panic(err)
	}
	return k
}()

func trusted() []ed25519.PublicKey {
	return []ed25519.PublicKey{seedAuthority.Public().(ed25519.PublicKey)}
}

// startTrusting starts an agent that trusts the tests' seed authority; seed gives it the seed
// role, authorized. ttl is its tag TTL (0: the default).
func startTrusting(t *testing.T, dir, registry string, seed bool, ttl time.Duration, bootstrap ...string) *node {
	t.Helper()
	pc := &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: bootstrap, SeedAuthorities: trusted()}
	if seed {
		pc.Seed, pc.SeedAuthorityKey = true, seedAuthority
	}
	return startAgentConfig(t, agent.Config{DataDir: dir, Registries: []string{registry}, P2P: pc, ChunkSize: 1 << 20, PieceSize: 1 << 20, TagTTL: ttl})
}

// seededCluster starts n agents that trust the tests' seed authority, the first an authorized
// seed; every one bootstraps from it.
func seededCluster(t *testing.T, n int, registry string) []*node {
	t.Helper()
	nodes := []*node{startTrusting(t, t.TempDir(), registry, true, 0)}
	for i := 1; i < n; i++ {
		nodes = append(nodes, startTrusting(t, t.TempDir(), registry, false, 0, nodes[0].Node().Addrs()...))
	}
	for _, nd := range nodes {
		waitFor(t, func() bool { return nd.Node().RoutingTableSize() > 0 }, "the routing table to fill")
	}
	return nodes
}

// lyingResolver answers every tag resolution, as a coordinator, and every tag record request
// with rec: the digest of a manifest the liar built.
type lyingResolver struct {
	*transfer.MemoryContent
	rec tags.Record
}

func (l lyingResolver) Resolve(context.Context, string, string, string, []string) (tags.Record, error) {
	return l.rec, nil
}

func (l lyingResolver) TagRecords(string, string, string) ([]tags.Record, error) {
	return []tags.Record{l.rec}, nil
}

// startTagLiar starts a real libp2p node in dataDir that speaks the content protocol, holds
// (and advertises) a manifest of its own, and names it for every tag, dated in the future. seed
// makes it claim the seed role (advertise the seed key) without any authorization.
func startTagLiar(t *testing.T, dataDir string, seed bool, bootstrap ...string) (*p2p.Node, digest.Digest) {
	t.Helper()
	img, err := devregistry.Image([]int64{1000}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := img.RawManifest()
	mt, _ := img.MediaType()
	d := digest.FromBytes(body)
	mc := transfer.NewMemoryContent()
	mc.Put(d, string(mt), body)
	n, err := p2p.New(p2p.Config{DataDir: dataDir, ListenAddrs: []string{loopback}, Bootstrap: bootstrap, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	transfer.NewServer(n.Host(), lyingResolver{mc, tags.Record{Digest: d, MediaType: string(mt), Resolved: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; n.Close() })
	waitFor(t, func() bool { return n.RoutingTableSize() > 0 }, "the liar to join")
	if err := n.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	return n, d
}

// closestDir returns a data directory whose identity is XOR-closer to key than every peer of
// others: the liar's, so that it is the one a rule that picks by distance would pick.
func closestDir(t *testing.T, key string, others ...peer.ID) string {
	t.Helper()
	for range 1000 {
		dir := t.TempDir()
		id, err := keys.PeerIDFromDataDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if p2p.ByDistance(key, append(slices.Clone(others), id))[0] == id {
			return dir
		}
	}
	t.Fatal("no identity closer to the key found")
	return ""
}

// tagDigest GETs a manifest by tag through a node and returns the digest it served, or "" with
// the status when it served none.
func tagDigest(t *testing.T, host, repo, tag string) (digest.Digest, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	c := &http.Client{Timeout: time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", resp.StatusCode
	}
	return digest.Digest(resp.Header.Get("Docker-Content-Digest")), resp.StatusCode
}

func genuineImage(t *testing.T, o *devregistry.Registry, repoTag string) digest.Digest {
	t.Helper()
	img, err := devregistry.Image([]int64{2000}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, repoTag, img)
	h, _ := img.Digest()
	return digest.Digest(h.String())
}

// A peer that advertises the seed key without the operator's authorization, and sits closer to
// the tag's key than the real seed, answers resolutions with a manifest it built. With the
// origin up, and then down, every node serves the origin's manifest: the rogue is no seed, so
// the real seed coordinates, and with the origin down the tag comes from the real seed's record
// or the node's own.
func TestRogueSeedCannotPoisonTags(t *testing.T) {
	o := startOrigin(t)
	genuine := genuineImage(t, o, "test/app:v1")
	key := "shoal-tag:" + tags.Prefix(o.Host(), "test/app", "v1")
	seed := startTrusting(t, t.TempDir(), o.URL(), true, 0)
	liar, fake := startTagLiar(t, closestDir(t, key, seed.Node().ID()), true, seed.Node().Addrs()...)
	waitFor(t, func() bool {
		ps, _ := seed.Node().FindProviders(context.Background(), p2p.SeedKey)
		return slices.ContainsFunc(ps, func(i peer.AddrInfo) bool { return i.ID == liar.ID() })
	}, "the rogue's seed record")
	b := startTrusting(t, t.TempDir(), o.URL(), false, time.Nanosecond, seed.Node().Addrs()...)
	c := startTrusting(t, t.TempDir(), o.URL(), false, time.Nanosecond, seed.Node().Addrs()...)
	for _, nd := range []*node{b, c} {
		waitFor(t, func() bool { return slices.Contains(nd.Node().Seeds(context.Background()), seed.Node().ID()) }, "the real seed")
		waitProvided(t, nd, fake.String())
	}

	if d, st := tagDigest(t, b.host, "test/app", "v1"); d != genuine {
		t.Fatalf("origin up: node served %q (status %d) for the tag, want the origin's %s (the rogue's is %s)", d, st, genuine, fake)
	}
	if d, _ := tagDigest(t, seed.host, "test/app", "v1"); d != genuine {
		t.Fatalf("origin up: the seed served %q", d)
	}

	o.Close()
	for name, nd := range map[string]*node{"a node with its own record": b, "a node without one": c} {
		if d, st := tagDigest(t, nd.host, "test/app", "v1"); d != genuine {
			t.Fatalf("origin down, %s: served %q (status %d), want %s (the rogue's is %s)", name, d, st, genuine, fake)
		}
	}
}

// With no seed, a tag's coordinator is the node closest to its key: here a liar. Its answer is a
// hint at most: with the origin up the origin's digest is served; with the origin down, a node
// with its own record serves that, and one without serves nothing rather than the liar's.
func TestPlainCoordinatorIsOnlyAHint(t *testing.T) {
	o := startOrigin(t)
	genuine := genuineImage(t, o, "test/app:v1")
	key := "shoal-tag:" + tags.Prefix(o.Host(), "test/app", "v1")
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	var ids []peer.ID
	for _, dir := range dirs {
		id, err := keys.PeerIDFromDataDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	first := startTrusting(t, dirs[0], o.URL(), false, 0)
	boot := first.Node().Addrs()
	_, fake := startTagLiar(t, closestDir(t, key, ids...), false, boot...)
	b := startTrusting(t, dirs[1], o.URL(), false, time.Nanosecond, boot...)
	c := startTrusting(t, dirs[2], o.URL(), false, time.Nanosecond, boot...)
	for _, nd := range []*node{b, c} {
		waitFor(t, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p, self, err := nd.Node().CoordinatorFor(ctx, key)
			return err == nil && !self && p2p.ByDistance(key, append(slices.Clone(ids), p))[0] == p
		}, "the liar to be the tag's coordinator")
		waitProvided(t, nd, fake.String())
	}

	if d, st := tagDigest(t, b.host, "test/app", "v1"); d != genuine {
		t.Fatalf("origin up: served %q (status %d), want the origin's %s (the liar's is %s)", d, st, genuine, fake)
	}
	o.Close()
	if d, st := tagDigest(t, b.host, "test/app", "v1"); d != genuine {
		t.Fatalf("origin down, own record: served %q (status %d), want %s", d, st, genuine)
	}
	if d, st := tagDigest(t, c.host, "test/app", "v1"); d != "" {
		t.Fatalf("origin down, no record: served %q (status %d), want nothing (the liar's is %s)", d, st, fake)
	}
}

// notClosestDir returns a data directory whose identity is not the XOR-closest to key among
// others and itself: a liar that is not the tag's coordinator.
func notClosestDir(t *testing.T, key string, others ...peer.ID) string {
	t.Helper()
	for range 1000 {
		dir := t.TempDir()
		id, err := keys.PeerIDFromDataDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if p2p.ByDistance(key, append(slices.Clone(others), id))[0] != id {
			return dir
		}
	}
	t.Fatal("no identity farther from the key found")
	return ""
}

// During an origin outage a tag is answered only from the node's own records and authorized
// seeds: a connected peer that is not the tag's coordinator, holding a newer record of the tag
// (dated in the future), is not asked, and the node serves its own record.
func TestOutageTakesNoPeerRecord(t *testing.T) {
	o := startOrigin(t)
	genuine := genuineImage(t, o, "test/app:v1")
	key := "shoal-tag:" + tags.Prefix(o.Host(), "test/app", "v1")
	dirs := []string{t.TempDir(), t.TempDir()}
	var ids []peer.ID
	for _, dir := range dirs {
		id, err := keys.PeerIDFromDataDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	first := startTrusting(t, dirs[0], o.URL(), false, 0)
	boot := first.Node().Addrs()
	liar, fake := startTagLiar(t, notClosestDir(t, key, ids...), false, boot...)
	b := startTrusting(t, dirs[1], o.URL(), false, time.Nanosecond, boot...)
	waitProvided(t, b, fake.String())
	waitFor(t, func() bool { return slices.Contains(b.Node().Peers(), liar.ID()) }, "the liar to be connected")

	if d, st := tagDigest(t, b.host, "test/app", "v1"); d != genuine {
		t.Fatalf("origin up: served %q (status %d), want %s", d, st, genuine)
	}
	o.Close()
	if d, st := tagDigest(t, b.host, "test/app", "v1"); d != genuine {
		t.Fatalf("origin down: served %q (status %d), want the node's own record %s (the liar's is %s)", d, st, genuine, fake)
	}
}
