package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// Attacks by an admitted peer (found in review). Each test fails without its fix.

// A peer serves honest chunks under a map whose later states are forged, then dies; the node
// resumes at the origin and commits. The map it records (and serves) must be the verified one,
// not the liar's.
func TestForgedMapTailIsNotRecorded(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 6<<20)
	pushBlob(t, o, "test/big", data, d)
	bld, _ := chunks.NewBuilder(digest.SHA256, 1<<20)
	bld.Write(data)
	honest := bld.Map()
	forged := *honest
	forged.States = append([][]byte(nil), honest.States...)
	forged.States[4] = bytes.Repeat([]byte{0xAA}, 32)
	forged.States[5] = bytes.Repeat([]byte{0xBB}, 32)
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", data)
	mc.PutMap(&forged)
	release := make(chan struct{})
	var once sync.Once
	kill := func() { once.Do(func() { close(release) }) }
	t.Cleanup(kill)
	seed := startPeer(t, t.TempDir(), nil, o.URL())
	liar := startTestPeer(t, stallingContent{MemoryContent: mc, after: 3 << 20, release: release}, seed.Node().Addrs()...)
	liar.Provide(context.Background(), d)
	b := startPeer(t, t.TempDir(), nil, o.URL(), seed.Node().Addrs()...)
	waitProvided(t, b, d.String())

	res := make(chan error, 1)
	go func() {
		body, err := getBlob(t, b.host, "test/big", d)
		if err == nil && !bytes.Equal(body, data) {
			err = io.ErrUnexpectedEOF
		}
		res <- err
	}()
	waitFor(t, func() bool { return counter(t, b.Gatherer(), "shoal_fetched_bytes_total", "peer") >= 3<<20 }, "chunks from the liar")
	kill()
	liar.Close()
	if err := <-res; err != nil {
		t.Fatalf("pull: %v", err)
	}
	path := filepath.Join(b.dir, "blobs", "sha256", d.Encoded())
	waitFor(t, func() bool { _, err := os.Stat(path); return err == nil }, "commit")

	probe := startTestPeer(t, transfer.NewMemoryContent(), seed.Node().Addrs()...)
	var addrs []multiaddr.Multiaddr
	for _, s := range b.Node().Addrs() {
		ma, _ := multiaddr.NewMultiaddr(s)
		if pi, err := peer.AddrInfoFromP2pAddr(ma); err == nil {
			addrs = append(addrs, pi.Addrs...)
		}
	}
	if err := probe.Host().Connect(context.Background(), peer.AddrInfo{ID: b.Node().ID(), Addrs: addrs}); err != nil {
		t.Fatal(err)
	}
	m, err := transfer.NewClient(probe.Host()).Map(context.Background(), b.Node().ID(), d, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Equal(honest) {
		t.Fatal("the node serves the liar's forged chunk map")
	}
	// A map in any other chunk size would cost a full read of the blob per request: refused.
	if _, err := transfer.NewClient(probe.Host()).Map(context.Background(), b.Node().ID(), d, 64<<10); err == nil {
		t.Fatal("served a map in a foreign chunk size")
	}
}

// A peer with a self-consistent forged map sends forged chunks that verify, then withholds the
// last one. The fetch resumed at the origin fails its digest: the failure is the peers' (not the
// origin's), and the next pull goes around them and succeeds. The liar is not blamed by name
// here: after a resume a node cannot tell a forger from an honest peer that relayed its states
// (TestForgerInASwarm).
func TestWithholdingForgerIsAvoided(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 6<<20)
	pushBlob(t, o, "test/big", data, d)
	garbage := make([]byte, len(data))
	rand.Read(garbage)
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", garbage) // its computed map is a consistent forgery named d
	release := make(chan struct{})
	close(release) // reads past 5 MiB fail at once: the last chunk never comes
	seed := startPeer(t, t.TempDir(), nil, o.URL())
	liar := startTestPeer(t, stallingContent{MemoryContent: mc, after: 5 << 20, release: release}, seed.Node().Addrs()...)
	liar.Provide(context.Background(), d)
	b := startPeer(t, t.TempDir(), nil, o.URL(), seed.Node().Addrs()...)
	waitProvided(t, b, d.String())

	if _, err := getBlob(t, b.host, "test/big", d); err == nil {
		t.Fatal("the first pull, built on a forged map, succeeded")
	}
	if v := counter(t, b.Gatherer(), "shoal_verification_failures_total", "peer"); v < 1 {
		t.Fatal("the failure was not put on the peers")
	}
	if v := counter(t, b.Gatherer(), "shoal_verification_failures_total", "origin"); v != 0 {
		t.Fatalf("the origin was blamed %v times for the liar's map", v)
	}
	body, err := getBlob(t, b.host, "test/big", d)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("second pull: %v", err)
	}
}

// slowContent trickles one byte per 100 ms: never a stall, hardly any progress.
type slowContent struct{ *transfer.MemoryContent }

func (s slowContent) OpenContent(d digest.Digest) (transfer.Blob, error) {
	b, err := s.MemoryContent.OpenContent(d)
	if err != nil {
		return nil, err
	}
	return &slowBlob{Blob: b}, nil
}

type slowBlob struct{ transfer.Blob }

func (b *slowBlob) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(100 * time.Millisecond)
	return b.Blob.ReadAt(p[:1], off)
}

// A peer trickling bytes is dropped at its chunk deadline and the origin finishes the blob.
func TestTricklingPeerIsDropped(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 2<<20)
	pushBlob(t, o, "test/big", data, d)
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", data)
	seed := startPeer(t, t.TempDir(), nil, o.URL())
	slow := startTestPeer(t, slowContent{mc}, seed.Node().Addrs()...)
	slow.Provide(context.Background(), d)
	// A short deadline: a second's grace, then 1 MiB/s.
	b := startAgentConfig(t, agent.Config{
		DataDir:      t.TempDir(),
		Registries:   []string{o.URL()},
		P2P:          &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: seed.Node().Addrs()},
		ChunkSize:    1 << 20,
		PieceSize:    1 << 20,
		PeerDeadline: agent.PeerDeadline{Grace: time.Second, MinRate: 1 << 20},
	})
	waitProvided(t, b, d.String())

	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + b.host + "/v2/test/big/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("pull past a trickling peer: %v", err)
	}
}

// In the middle of a swarm: four nodes pull a blob at once while a peer serves forged chunks
// under a self-consistent forged map. Every node ends with the right content, nothing wrong is
// stored, and the liar is blamed. A pull built on the forged map is cut short (a runtime retries
// it); the retry goes to the origin, not to the other nodes, which may be relaying the forged
// map while their own fetches go on, so it succeeds however the nodes' fetches overlap.
func TestForgerInASwarm(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 6<<20)
	pushBlob(t, o, "test/big", data, d)
	bad := bytes.Clone(data)
	bad[2<<20+7] ^= 0x5a
	bld, _ := chunks.NewBuilder(digest.SHA256, 1<<20)
	bld.Write(bad)
	forged := bld.Map()
	forged.Digest = d
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", bad)
	mc.PutMap(forged)

	nodes := cluster(t, 4, o.URL())
	liar := startTestPeer(t, mc, nodes[0].Node().Addrs()...)
	if err := liar.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes {
		waitProvided(t, nd, d.String())
	}
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 0; attempt < 2; attempt++ { // as a runtime retries a failed pull
				var body []byte
				if body, errs[i] = getBlob(t, nd.host, "test/big", d); errs[i] == nil && !bytes.Equal(body, data) {
					errs[i] = fmt.Errorf("wrong content")
				}
				if errs[i] == nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	blamed := 0
	for i, nd := range nodes {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i+1, errs[i])
		}
		path := filepath.Join(nd.dir, "blobs", "sha256", d.Encoded())
		waitFor(t, func() bool { _, err := os.Stat(path); return err == nil }, "commit")
		if stored, _ := os.ReadFile(path); !bytes.Equal(stored, data) {
			t.Fatalf("node %d stored wrong content", i+1)
		}
		mfs, _ := nd.Gatherer().Gather()
		for _, mf := range mfs {
			if mf.GetName() != "shoal_peer_verification_failures_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "peer" && l.GetValue() == liar.ID().String() {
						blamed++
					} else if l.GetName() == "peer" {
						t.Errorf("node %d blamed %s, an honest node", i+1, l.GetValue())
					}
				}
			}
		}
	}
	t.Logf("%d of %d nodes blamed the liar", blamed, len(nodes))
	if blamed == 0 {
		t.Fatal("no node blamed the liar")
	}
}

// A peer asks a coordinator to pull a blob naming no registry. An empty registry names the hosted
// namespace in every operation of the peer protocol (as in resolve and tag), and hosted content
// has no origin: the coordinator refuses, and its first upstream is not asked for the hosted
// repository's name.
func TestPullNamingNoRegistryIsHosted(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 100<<10)
	pushBlob(t, o, "test/app", data, d)
	coord := startPeer(t, t.TempDir(), nil, o.URL())
	rogue := startTestPeer(t, transfer.NewMemoryContent(), coord.Node().Addrs()...)
	c := transfer.NewClient(rogue.Host())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Pull(ctx, coord.Node().ID(), "", "test/app", d); err == nil {
		t.Error("the coordinator took a pull naming no registry")
	}
	if n := o.BlobGets(d.String()); n != 0 {
		t.Fatalf("the coordinator asked its first upstream for a hosted name (%d GETs of the blob)", n)
	}
	// Naming the upstream, the same pull is taken: the refusal is about the namespace.
	if err := c.Pull(ctx, coord.Node().ID(), o.Host(), "test/app", d); err != nil {
		t.Fatalf("a pull naming the upstream: %v", err)
	}
}
