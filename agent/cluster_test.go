package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/keys"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

const loopback = "/ip4/127.0.0.1/tcp/0"

// startPeer starts an agent with peer-to-peer on, joining through bootstrap.
func startPeer(t *testing.T, dir string, swarmKey []byte, registry string, bootstrap ...string) *node {
	t.Helper()
	return startAgentConfig(t, agent.Config{
		DataDir:    dir,
		Registries: []string{registry},
		P2P:        &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: bootstrap, SwarmKey: swarmKey},
		ChunkSize:  1 << 20,
		PieceSize:  1 << 20,
	})
}

// cluster starts n agents; every one bootstraps from the first.
func cluster(t *testing.T, n int, registry string) []*node {
	t.Helper()
	nodes := []*node{startPeer(t, t.TempDir(), nil, registry)}
	for i := 1; i < n; i++ {
		nodes = append(nodes, startPeer(t, t.TempDir(), nil, registry, nodes[0].Node().Addrs()...))
	}
	for _, nd := range nodes {
		waitFor(t, func() bool { return nd.Node().RoutingTableSize() > 0 }, "the routing table to fill")
	}
	return nodes
}

// waitProvided waits until node nd finds a provider for every digest.
func waitProvided(t *testing.T, nd *node, ds ...string) {
	t.Helper()
	for _, d := range ds {
		waitFor(t, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			ps, _ := nd.Node().FindProviders(ctx, digest.Digest(d))
			return len(ps) > 0
		}, "a provider of "+d)
	}
}

func blobDigests(t *testing.T, img interface {
	RawManifest() ([]byte, error)
}) []string {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	out := []string{m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

func TestClusterServesItself(t *testing.T) {
	o := startOrigin(t)
	img, err := devregistry.Image([]int64{3<<20 + 12345, 512 << 10}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/app:v1", img)
	nodes := cluster(t, 5, o.URL())
	o.ResetCounts()

	got, err := remote.Image(ref(t, nodes[0].host+"/test/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, got, img)
	blobs := blobDigests(t, img)
	md, _ := img.Digest()
	for _, nd := range nodes[1:] {
		waitProvided(t, nd, append(blobs, md.String())...)
	}
	// The first pull went through node 1, but each blob's coordinator (any node) fetched it from
	// the origin for the cluster; every node then has or takes the rest from peers.
	var fromOrigin float64
	for _, nd := range nodes {
		fromOrigin += counter(t, nd.Gatherer(), "shoal_fetched_bytes_total", "origin")
	}
	for i, nd := range nodes[1:] {
		got, err := remote.Image(ref(t, nd.host+"/test/app:v1"))
		if err != nil {
			t.Fatalf("node %d: %v", i+2, err)
		}
		sameImage(t, got, img)
	}
	var fromOrigin2, fromPeers float64
	for _, nd := range nodes {
		fromOrigin2 += counter(t, nd.Gatherer(), "shoal_fetched_bytes_total", "origin")
		fromPeers += counter(t, nd.Gatherer(), "shoal_fetched_bytes_total", "peer")
	}
	if fromOrigin2 != fromOrigin {
		t.Errorf("the later pulls fetched %v more bytes from the origin", fromOrigin2-fromOrigin)
	}
	if fromPeers < 4*(3<<20) {
		t.Errorf("only %v bytes moved between peers", fromPeers)
	}
	for _, b := range blobs {
		if n := o.BlobGets(b); n != 1 {
			t.Errorf("origin saw %d GETs of %s, want 1", n, b)
		}
	}
	if n := o.Count(http.MethodGet, "/v2/test/app/manifests/"+md.String()); n > 1 {
		t.Errorf("origin saw %d GETs of the manifest by digest", n)
	}
}

// startTestPeer starts a cluster member speaking the real protocol from content the test controls.
func startTestPeer(t *testing.T, content transfer.Content, bootstrap ...string) *p2p.Node {
	t.Helper()
	return startObservedTestPeer(t, content, nil, bootstrap...)
}

// servedBytes counts what a test peer sent.
type servedBytes struct{ n atomic.Int64 }

func (s *servedBytes) Served(_ string, _ int, bytes int64) { s.n.Add(bytes) }

func startObservedTestPeer(t *testing.T, content transfer.Content, obs transfer.Observer, bootstrap ...string) *p2p.Node {
	t.Helper()
	return startTestPeerWith(t, content, obs, nil, bootstrap...)
}

// startTestPeerWith is startObservedTestPeer with the transfer server's options.
func startTestPeerWith(t *testing.T, content transfer.Content, obs transfer.Observer, opts []transfer.ServerOption, bootstrap ...string) *p2p.Node {
	t.Helper()
	return startTestPeerConfig(t, p2p.Config{Bootstrap: bootstrap}, content, obs, opts...)
}

// startTestPeerConfig is startTestPeerWith with the node's p2p configuration (its data directory
// and listen address are the test's).
func startTestPeerConfig(t *testing.T, pc p2p.Config, content transfer.Content, obs transfer.Observer, opts ...transfer.ServerOption) *p2p.Node {
	t.Helper()
	pc.DataDir, pc.ListenAddrs = t.TempDir(), []string{loopback}
	n, err := p2p.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	transfer.NewServer(n.Host(), content, nil, obs, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; n.Close() })
	waitFor(t, func() bool { return n.RoutingTableSize() > 0 }, "the test peer to join")
	return n
}

func randomBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b, digest.FromBytes(b)
}

// pushBlob puts a blob straight into the origin's repository (a monolithic upload).
func pushBlob(t *testing.T, o *devregistry.Registry, repo string, data []byte, d digest.Digest) {
	t.Helper()
	u := fmt.Sprintf("%s/v2/%s/blobs/uploads/?digest=%s", o.URL(), repo, d)
	resp, err := http.Post(u, "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
}

func getBlob(t *testing.T, host, repo string, d digest.Digest) ([]byte, error) {
	t.Helper()
	resp, err := http.Get("http://" + host + "/v2/" + repo + "/blobs/" + d.String())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return io.ReadAll(resp.Body)
}

// stallingContent serves a blob honestly but stalls after `after` bytes of any range, until the
// test kills the peer: a peer dying in the middle of a transfer.
type stallingContent struct {
	*transfer.MemoryContent
	after   int64
	release chan struct{}
}

func (s stallingContent) OpenContent(d digest.Digest) (transfer.Blob, error) {
	b, err := s.MemoryContent.OpenContent(d)
	if err != nil {
		return nil, err
	}
	return &stallingBlob{Blob: b, after: s.after, release: s.release}, nil
}

type stallingBlob struct {
	transfer.Blob
	after   int64
	release chan struct{}
}

func (b *stallingBlob) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > b.after {
		<-b.release
		return 0, errors.New("peer killed")
	}
	return b.Blob.ReadAt(p, off)
}

func TestPeerDiesMidTransferResumesAtOffset(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 24<<20)
	pushBlob(t, o, "test/big", data, d)
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", data)
	release := make(chan struct{})
	var once sync.Once
	kill := func() { once.Do(func() { close(release) }) }
	t.Cleanup(kill)
	seed := startPeer(t, t.TempDir(), nil, o.URL())
	dying := startTestPeer(t, stallingContent{MemoryContent: mc, after: 10 << 20, release: release}, seed.Node().Addrs()...)
	if err := dying.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	b := startPeer(t, t.TempDir(), nil, o.URL(), seed.Node().Addrs()...)
	waitProvided(t, b, d.String())
	o.ResetCounts()

	type result struct {
		body []byte
		err  error
	}
	res := make(chan result, 1)
	go func() { body, err := getBlob(t, b.host, "test/big", d); res <- result{body, err} }()
	// Wait until the first chunks arrived from the peer, then kill it.
	waitFor(t, func() bool { return counter(t, b.Gatherer(), "shoal_fetched_bytes_total", "peer") >= 8<<20 }, "chunks from the peer")
	kill()
	dying.Close()
	r := <-res
	if r.err != nil || !bytes.Equal(r.body, data) {
		t.Fatalf("pull after the peer died: %v (%d bytes)", r.err, len(r.body))
	}
	fromPeer := counter(t, b.Gatherer(), "shoal_fetched_bytes_total", "peer")
	fromOrigin := counter(t, b.Gatherer(), "shoal_fetched_bytes_total", "origin")
	// The origin resumes at the end of the verified prefix. Chunks the peer sent beyond it (the
	// swarm takes a few out of order) come again from the origin, so the two may add up to a
	// little more than the blob; a restart would take it all from the origin.
	if fromPeer+fromOrigin < float64(len(data)) || fromOrigin > float64(len(data)-4<<20) {
		t.Fatalf("peer %v + origin %v bytes, want a resume from the peer's prefix (at least 4 MiB) for %d", fromPeer, fromOrigin, len(data))
	}
	if served := o.BytesServed(); served > int64(len(data))-4<<20 {
		t.Fatalf("origin sent %d bytes: the fetch restarted instead of resuming", served)
	}
	path := filepath.Join(b.dir, "blobs", "sha256", d.Encoded())
	waitFor(t, func() bool { _, err := os.Stat(path); return err == nil }, "the resumed blob to be committed")
}

func TestLyingPeerIsDroppedAndNothingCorruptStored(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 6<<20)
	pushBlob(t, o, "test/big", data, d)
	// The liar holds the honest chunk map but corrupts chunk 3 of the bytes.
	bld, _ := chunks.NewBuilder(digest.SHA256, 1<<20)
	bld.Write(data)
	bad := bytes.Clone(data)
	bad[3<<20+100] ^= 0x55
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", bad)
	mc.PutMap(bld.Map())

	seed := startPeer(t, t.TempDir(), nil, o.URL())
	var liarSent servedBytes
	liar := startObservedTestPeer(t, mc, &liarSent, seed.Node().Addrs()...)
	if err := liar.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	b := startPeer(t, t.TempDir(), nil, o.URL(), seed.Node().Addrs()...)
	waitProvided(t, b, d.String())

	body, err := getBlob(t, b.host, "test/big", d)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("pull with a lying peer: %v", err)
	}
	if v := counter(t, b.Gatherer(), "shoal_verification_failures_total", "peer"); v != 1 {
		t.Fatalf("peer verification failures = %v, want 1", v)
	}
	// Chunks are taken in any order, whole: the prefix before the corrupted chunk 3 at least, and
	// at most every chunk but that one, verified from the liar; the origin resumed at the prefix.
	if v := counter(t, b.Gatherer(), "shoal_fetched_bytes_total", "peer"); v < 3<<20 || v > 5<<20 || int64(v)%(1<<20) != 0 {
		t.Fatalf("%v verified bytes from the liar, want 3 to 5 whole chunks", v)
	}
	path := filepath.Join(b.dir, "blobs", "sha256", d.Encoded())
	waitFor(t, func() bool { _, err := os.Stat(path); return err == nil }, "the blob to be committed")
	stored, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(stored, data) {
		t.Fatalf("stored content wrong: %v", err)
	}
	// The liar is in the penalty box: the next fetch of something it provides skips it.
	data2, d2 := randomBlob(t, 2<<20)
	pushBlob(t, o, "test/big", data2, d2)
	mc.Put(d2, "", data2)
	liar.Provide(context.Background(), d2)
	waitProvided(t, seed, d2.String())
	sentBefore := liarSent.n.Load()
	if body, err := getBlob(t, b.host, "test/big", d2); err != nil || !bytes.Equal(body, data2) {
		t.Fatal(err)
	}
	if sent := liarSent.n.Load() - sentBefore; sent != 0 {
		t.Fatalf("fetched %d bytes from the penalized peer again", sent)
	}
}

func TestWrongSwarmKeyCannotJoinOrFetch(t *testing.T) {
	o := startOrigin(t)
	img, _ := devregistry.Image([]int64{1 << 20}, false, "linux/amd64")
	push(t, o, "test/app:v1", img)
	key, _ := keys.NewSwarmKey()
	other, _ := keys.NewSwarmKey()
	a := startPeer(t, t.TempDir(), key, o.URL())
	b := startPeer(t, t.TempDir(), key, o.URL(), a.Node().Addrs()...)
	waitFor(t, func() bool { return b.Node().RoutingTableSize() > 0 }, "b to join")
	if _, err := remote.Image(ref(t, a.host+"/test/app:v1")); err != nil {
		t.Fatal(err)
	}
	got, _ := remote.Image(ref(t, a.host+"/test/app:v1"))
	sameImage(t, got, img)
	md, _ := img.Digest()
	waitProvided(t, b, md.String())
	o.Close()

	for name, k := range map[string][]byte{"other key": other, "no key": nil} {
		t.Run(name, func(t *testing.T) {
			c := startPeer(t, t.TempDir(), k, o.URL(), a.Node().Addrs()...)
			time.Sleep(500 * time.Millisecond) // bootstrap attempts come and fail
			if n := len(c.Node().Peers()); n != 0 {
				t.Fatalf("connected to %d peers", n)
			}
			if _, err := remote.Image(ref(t, c.host+"/test/app@"+md.String())); err == nil {
				t.Fatal("fetched without the swarm key")
			}
		})
	}
	// A member with the key pulls it with the origin gone.
	got, err := remote.Image(ref(t, b.host+"/test/app@"+md.String()))
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, got, img)
}

func TestRestartedNodeReadvertisesAndServes(t *testing.T) {
	o := startOrigin(t)
	img, _ := devregistry.Image([]int64{2<<20 + 7, 300 << 10}, true, "linux/amd64")
	push(t, o, "test/app:v1", img)
	dirA := t.TempDir()
	// A is an authorized seed: only such a peer's last resolution of a tag is taken while the
	// origin is down.
	a := startTrusting(t, dirA, o.URL(), true, 0)
	if _, err := remote.Image(ref(t, a.host+"/test/app:v1")); err != nil {
		t.Fatal(err)
	}
	got, _ := remote.Image(ref(t, a.host+"/test/app:v1"))
	sameImage(t, got, img)
	a.stop()
	o.Close()

	a2 := startTrusting(t, dirA, o.URL(), true, 0)
	c := startTrusting(t, t.TempDir(), o.URL(), false, 0, a2.Node().Addrs()...)
	if a2.Node().ID() != a.Node().ID() {
		t.Fatal("identity changed across restart")
	}
	md, _ := img.Digest()
	waitProvided(t, c, append(blobDigests(t, img), md.String())...)
	// By digest and, with the origin down, by tag: the tag comes from the seed's last resolution.
	for _, r := range []string{c.host + "/test/app@" + md.String(), c.host + "/test/app:v1"} {
		got, err := remote.Image(ref(t, r))
		if err != nil {
			t.Fatalf("pull %s: %v", r, err)
		}
		sameImage(t, got, img)
	}
}

func TestOriginDownClusterServesTagsAndDigests(t *testing.T) {
	o := startOrigin(t)
	idx, _ := devregistry.Index([]int64{1<<20 + 3}, "linux/amd64", "linux/arm64")
	push(t, o, "test/multi:v1", idx)
	nodes := seededCluster(t, 3, o.URL())
	// Node 0, an authorized seed, pulls the whole index (both platforms); with the origin down
	// the others take the tag from its last resolution.
	gi, err := remote.Index(ref(t, nodes[0].host+"/test/multi:v1"))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	var all []string
	for _, desc := range im.Manifests {
		child, err := gi.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := idx.Image(desc.Digest)
		sameImage(t, child, want)
		all = append(all, desc.Digest.String())
		all = append(all, blobDigests(t, want)...)
	}
	o.Close()
	for _, nd := range nodes[1:] {
		waitProvided(t, nd, all...)
		gi, err := remote.Index(ref(t, nd.host+"/test/multi:v1"))
		if err != nil {
			t.Fatalf("index by tag with the origin down: %v", err)
		}
		for i, desc := range im.Manifests {
			child, err := gi.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			if i == len(im.Manifests)-1 {
				// HEAD of a blob the node lacks is answered from the size the manifest it
				// served lists (never from a peer's claim).
				if _, err := child.RawManifest(); err != nil {
					t.Fatal(err)
				}
				layer := all[len(all)-1]
				resp, err := http.Head("http://" + nd.host + "/v2/test/multi/blobs/" + layer)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 {
					t.Fatalf("HEAD of a peer's blob with the origin down: %d, length %d", resp.StatusCode, resp.ContentLength)
				}
			}
			want, _ := idx.Image(desc.Digest)
			sameImage(t, child, want)
		}
	}
}

// Rate limits hold for peer traffic: a node's download cap and a holder's upload cap each keep
// the transfer at or under the limit (plus 10%; only that bound is asserted, since a loaded
// machine can only be slower).
func TestRateLimitsHold(t *testing.T) {
	const limit = 16_000_000
	const size = 8 << 20
	for _, tc := range []struct {
		name           string
		upload, dnload int64
	}{
		{"download cap", 0, limit},
		{"upload cap", limit, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startOrigin(t)
			data, d := randomBlob(t, size)
			pushBlob(t, o, "test/big", data, d)
			md := pushListing(t, o, "test/big", map[digest.Digest]int64{d: size})
			peerCfg := func(dir string, boot []string) agent.Config {
				return agent.Config{DataDir: dir, Registries: []string{o.URL()}, ChunkSize: 1 << 20, PieceSize: 1 << 20,
					P2P: &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: boot}}
			}
			ca := peerCfg(t.TempDir(), nil)
			ca.MaxUploadRate = tc.upload
			a := startAgentConfig(t, ca)
			if body, err := getBlob(t, a.host, "test/big", d); err != nil || len(body) != size {
				t.Fatal(err)
			}
			cb := peerCfg(t.TempDir(), a.Node().Addrs())
			cb.MaxDownloadRate = tc.dnload
			b := startAgentConfig(t, cb)
			waitProvided(t, b, d.String())
			getManifest(t, b.host, "test/big", md) // the blob's size, from a manifest b verified
			o.Close()                              // every byte must come from the peer
			start := time.Now()
			body, err := getBlob(t, b.host, "test/big", d)
			took := time.Since(start)
			if err != nil || !bytes.Equal(body, data) {
				t.Fatalf("pull: %v", err)
			}
			// The limiter lets one burst (a tenth of a second) through at once.
			rate := float64(size-limit/10) / took.Seconds()
			t.Logf("%.1f MB/s against a limit of %.1f MB/s", rate/1e6, float64(limit)/1e6)
			if rate > limit*1.10 {
				t.Fatalf("%.0f B/s exceeds the limit of %d by more than 10%%", rate, limit)
			}
		})
	}
}
