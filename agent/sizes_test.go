package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// Forged sizes. A blob's size is metadata: it becomes the client's Content-Length and the
// store's reservation before the digest can be checked, so it is taken only from the node's own
// records of verified manifests, the origin, or authorized seeds. Each test fails without the
// fix.

// forgedSizeContent serves garbage under the digest of a real small blob: its computed chunk
// map is self-consistent and claims the garbage's size. Reads past `after` fail at once: the
// last chunk never comes.
func forgedSizeContent(t *testing.T, d digest.Digest, claimed, after int64) transfer.Content {
	t.Helper()
	garbage := make([]byte, claimed)
	rand.Read(garbage)
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", garbage)
	release := make(chan struct{})
	close(release)
	return stallingContent{MemoryContent: mc, after: after, release: release}
}

// blamed reports how often nd counted a verification failure against peer p.
func blamed(t *testing.T, nd *node, p string) float64 {
	t.Helper()
	mfs, err := nd.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "shoal_peer_verification_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "peer" && l.GetValue() == p {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// diskBytes is what the data directory's content files take: committed, partial and temporary.
func diskBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, sub := range []string{"blobs", "partial", "tmp"} {
		_ = filepath.WalkDir(filepath.Join(dir, sub), func(_ string, de fs.DirEntry, err error) error {
			if err == nil && !de.IsDir() {
				if info, err := de.Info(); err == nil {
					n += info.Size()
				}
			}
			return nil
		})
	}
	return n
}

// getBlobResp GETs a blob and returns the response's status, Content-Length and body.
func getBlobResp(t *testing.T, host, repo string, d digest.Digest) (int, int64, []byte) {
	t.Helper()
	c := &http.Client{Timeout: time.Minute}
	resp, err := c.Get("http://" + host + "/v2/" + repo + "/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, resp.ContentLength, body
}

// pushListing pushes to the origin a manifest that lists the blobs as layers (with a config of
// its own) and returns its digest: what a node learns blob sizes from when it serves it.
func pushListing(t *testing.T, o *devregistry.Registry, repo string, blobs map[digest.Digest]int64) digest.Digest {
	t.Helper()
	config := []byte("{}")
	pushBlob(t, o, repo, config, digest.FromBytes(config))
	m := oci.Manifest{MediaType: oci.MediaTypeImageManifest,
		Config: &oci.Descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest.FromBytes(config), Size: int64(len(config))}}
	for d, n := range blobs {
		m.Layers = append(m.Layers, oci.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: d, Size: n})
	}
	body, err := json.Marshal(struct {
		SchemaVersion int `json:"schemaVersion"`
		oci.Manifest
	}{2, m})
	if err != nil {
		t.Fatal(err)
	}
	md := digest.FromBytes(body)
	req, _ := http.NewRequest(http.MethodPut, o.URL()+"/v2/"+repo+"/manifests/"+md.String(), bytes.NewReader(body))
	req.Header.Set("Content-Type", oci.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("manifest upload: %d", resp.StatusCode)
	}
	return md
}

// getManifest GETs a manifest by digest through a node.
func getManifest(t *testing.T, host, repo string, d digest.Digest) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/v2/"+repo+"/manifests/"+d.String(), nil)
	req.Header.Set("Accept", oci.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest %s through %s: %d", d, host, resp.StatusCode)
	}
}

// The attack as found: a peer advertises a real 1 KiB blob, claims 48 MiB with a self-consistent
// chunk map and withholds the last chunk. The client gets the blob's 1 KiB with the right
// Content-Length (the size comes from the origin), the peer is blamed, nothing of the forgery
// is kept, and the store's usage accounts for everything on disk. With the attacker gone, the
// next pull (of another node, with the origin as the only source) is unaffected too.
func TestForgedSizeFromPeer(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 1<<10)
	pushBlob(t, o, "test/app", data, d)
	seed := startPeer(t, t.TempDir(), nil, o.URL())
	liar := startTestPeer(t, forgedSizeContent(t, d, 48<<20, 47<<20), seed.Node().Addrs()...)
	if err := liar.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	b := startPeer(t, t.TempDir(), nil, o.URL(), seed.Node().Addrs()...)
	waitProvided(t, b, d.String())

	// HEAD first, as clients do: the size is the origin's, never the peer's.
	resp, err := http.Head("http://" + b.host + "/v2/test/app/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(data)) {
		t.Fatalf("HEAD: %d, Content-Length %d, want 200 and %d", resp.StatusCode, resp.ContentLength, len(data))
	}
	status, length, body := getBlobResp(t, b.host, "test/app", d)
	if status != http.StatusOK || length != int64(len(data)) || !bytes.Equal(body, data) {
		t.Fatalf("GET: %d, Content-Length %d, %d bytes; want 200 and the blob's %d bytes", status, length, len(body), len(data))
	}
	if blamed(t, b, liar.ID().String()) < 1 {
		t.Error("the peer that claimed another size was not blamed")
	}
	waitFor(t, func() bool { st := b.Status().Store; return st.Objects == 1 && st.Pending == 0 }, "the commit")
	if used, disk := b.Status().Store.Bytes, diskBytes(t, b.dir); used != disk || disk != int64(len(data)) {
		t.Errorf("store usage %d, on disk %d; want both the blob's %d", used, disk, len(data))
	}

	// The attacker leaves; a node that never met it pulls through the same cluster.
	liar.Close()
	c := startPeer(t, t.TempDir(), nil, o.URL(), seed.Node().Addrs()...)
	status, length, body = getBlobResp(t, c.host, "test/app", d)
	if status != http.StatusOK || length != int64(len(data)) || !bytes.Equal(body, data) {
		t.Fatalf("later GET: %d, Content-Length %d, %d bytes", status, length, len(body))
	}
}

// A failed fetch of an earlier version left a forged partial file: 48 MiB recorded for a 1 KiB
// blob, every chunk but the last verified against the liar's map. The next fetch does not
// resume it at the forged size: it is dropped, and the client gets the blob from the origin.
func TestForgedPartialIsDropped(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 1<<10)
	pushBlob(t, o, "test/app", data, d)
	dir := t.TempDir()
	const claimed = 8 << 20
	garbage := make([]byte, claimed)
	rand.Read(garbage)
	bld, _ := chunks.NewBuilder(digest.SHA256, 1<<20)
	bld.Write(garbage)
	forged := bld.Map()
	forged.Digest = d
	st, err := store.Open(dir, store.WithChunkSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.ResumeWriter(d, claimed)
	if err != nil {
		t.Fatal(err)
	}
	for i := range chunks.Count(claimed, 1<<20) - 1 {
		off, n := forged.Range(i)
		if _, err := w.WriteAt(garbage[off:off+n], off); err != nil {
			t.Fatal(err)
		}
		if err := w.MarkChunk(i, forged); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Suspend(); err != nil {
		t.Fatal(err)
	}
	if size, ok := st.Partial(d); !ok || size != claimed {
		t.Fatalf("the forged partial was not kept: %d %v", size, ok)
	}
	st.Close()

	b := startAgentConfig(t, agent.Config{DataDir: dir, Registries: []string{o.URL()}, ChunkSize: 1 << 20, PieceSize: 1 << 20})
	if used := b.Status().Store.Bytes; used < claimed-(1<<20) {
		t.Errorf("store usage %d does not count the partial file's %d bytes", used, claimed-(1<<20))
	}
	status, length, body := getBlobResp(t, b.host, "test/app", d)
	if status != http.StatusOK || length != int64(len(data)) || !bytes.Equal(body, data) {
		t.Fatalf("GET: %d, Content-Length %d, %d bytes; want 200 and the blob's %d bytes", status, length, len(body), len(data))
	}
	// The blob is committed just after the client's last byte.
	waitFor(t, func() bool { st := b.Status().Store; return st.Objects == 1 && st.Pending == 0 }, "the commit")
	if entries, _ := os.ReadDir(filepath.Join(dir, "partial")); len(entries) != 0 {
		t.Errorf("partial/ still holds %d files", len(entries))
	}
	if used := b.Status().Store.Bytes; used != int64(len(data)) {
		t.Errorf("store usage %d after the fetch, want %d", used, len(data))
	}
}

// A provider whose chunk map claims another size than the bound one is blamed and not used for
// the blob; the blob comes from the honest provider (or the origin).
func TestWrongSizeMapIsBlamed(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 6<<20)
	pushBlob(t, o, "test/big", data, d)
	honest := startPeer(t, t.TempDir(), nil, o.URL())
	if body, err := getBlob(t, honest.host, "test/big", d); err != nil || !bytes.Equal(body, data) {
		t.Fatalf("seeding the honest node: %v", err)
	}
	// The liar holds the real bytes and answers ranges truthfully, but its map claims 7 MiB.
	bld, _ := chunks.NewBuilder(digest.SHA256, 1<<20)
	bld.Write(append(bytes.Clone(data), make([]byte, 1<<20)...))
	wrong := bld.Map()
	wrong.Digest = d
	mc := transfer.NewMemoryContent()
	mc.Put(d, "", data)
	mc.PutMap(wrong)
	liar := startTestPeer(t, mc, honest.Node().Addrs()...)
	if err := liar.Provide(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	b := startPeer(t, t.TempDir(), nil, o.URL(), honest.Node().Addrs()...)
	waitProvided(t, b, d.String())
	waitFor(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ps, _ := b.Node().FindProviders(ctx, d)
		return len(ps) >= 2
	}, "both providers")

	status, length, body := getBlobResp(t, b.host, "test/big", d)
	if status != http.StatusOK || length != int64(len(data)) || !bytes.Equal(body, data) {
		t.Fatalf("GET: %d, Content-Length %d, %d bytes", status, length, len(body))
	}
	if blamed(t, b, liar.ID().String()) < 1 {
		t.Error("the provider whose map claims another size was not blamed")
	}
	if n := blamed(t, b, honest.Node().ID().String()); n != 0 {
		t.Errorf("the honest provider was blamed %v times", n)
	}
}

// With no size from a trusted party (no record, the origin down, no seed), a HEAD is not answered
// from a peer's claim and a blob larger than a chunk is not taken from peers: the client gets a
// clear 503 and tries its next host. A blob of one chunk still comes from a peer, verified whole
// by its digest, with its proven length.
func TestNoTrustedSizeNoPeerBytes(t *testing.T) {
	o := startOrigin(t)
	big, db := randomBlob(t, 3<<20)
	small, ds := randomBlob(t, 100<<10)
	pushBlob(t, o, "test/app", big, db)
	pushBlob(t, o, "test/app", small, ds)
	a := startPeer(t, t.TempDir(), nil, o.URL())
	for _, x := range []struct {
		d    digest.Digest
		data []byte
	}{{db, big}, {ds, small}} {
		if body, err := getBlob(t, a.host, "test/app", x.d); err != nil || !bytes.Equal(body, x.data) {
			t.Fatalf("seeding: %v", err)
		}
	}
	b := startPeer(t, t.TempDir(), nil, o.URL(), a.Node().Addrs()...)
	waitProvided(t, b, db.String(), ds.String())
	o.Close()

	resp, err := http.Head("http://" + b.host + "/v2/test/app/blobs/" + db.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("HEAD with no trusted size: %d (Content-Length %d), want 503", resp.StatusCode, resp.ContentLength)
	}
	if status, _, body := getBlobResp(t, b.host, "test/app", db); status != http.StatusServiceUnavailable || !bytes.Contains(body, []byte(`"errors"`)) {
		t.Errorf("GET of a multi-chunk blob with no trusted size: %d %.200q, want a 503 OCI error", status, body)
	}
	status, length, body := getBlobResp(t, b.host, "test/app", ds)
	if status != http.StatusOK || length != int64(len(small)) || !bytes.Equal(body, small) {
		t.Errorf("GET of a one-chunk blob from a peer: %d, Content-Length %s, %d bytes", status, strconv.FormatInt(length, 10), len(body))
	}
}

// A manifest the node served is its own record of the sizes of the blobs it lists: with the
// origin down and no seed, a blob it lists comes from peers, with its Content-Length, and a HEAD
// answers from the record.
func TestManifestRecordBindsSize(t *testing.T) {
	o := startOrigin(t)
	big, db := randomBlob(t, 3<<20)
	pushBlob(t, o, "test/app", big, db)
	md := pushListing(t, o, "test/app", map[digest.Digest]int64{db: int64(len(big))})
	a := startPeer(t, t.TempDir(), nil, o.URL())
	if body, err := getBlob(t, a.host, "test/app", db); err != nil || !bytes.Equal(body, big) {
		t.Fatalf("seeding: %v", err)
	}
	b := startPeer(t, t.TempDir(), nil, o.URL(), a.Node().Addrs()...)
	waitProvided(t, b, db.String())
	getManifest(t, b.host, "test/app", md)
	o.Close()

	resp, err := http.Head("http://" + b.host + "/v2/test/app/blobs/" + db.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(big)) {
		t.Errorf("HEAD: %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
	}
	status, length, body := getBlobResp(t, b.host, "test/app", db)
	if status != http.StatusOK || length != int64(len(big)) || !bytes.Equal(body, big) {
		t.Errorf("GET: %d, Content-Length %d, %d bytes", status, length, len(body))
	}
}

// A fetch cut short leaves a partial file for a resume. It counts toward --max-store-size, after
// a restart too, and garbage collection evicts it like any other content when room is needed.
func TestStoreLimitCountsPartials(t *testing.T) {
	o := startOrigin(t)
	first, d1 := randomBlob(t, 8<<20)
	second, d2 := randomBlob(t, 3<<20)
	pushBlob(t, o, "test/big", first, d1)
	pushBlob(t, o, "test/big", second, d2)
	dir := t.TempDir()
	cfg := agent.Config{DataDir: dir, Registries: []string{o.URL()}, ChunkSize: 1 << 20, PieceSize: 1 << 20}
	slow := cfg
	slow.MaxDownloadRate = 2 << 20
	n := startAgentConfig(t, slow)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = getBlob(t, n.host, "test/big", d1) // cut short by the shutdown
	}()
	partial := filepath.Join(dir, "partial", "sha256-"+d1.Encoded())
	waitFor(t, func() bool { st, err := os.Stat(partial); return err == nil && st.Size() >= 4<<20 }, "4 MiB to land")
	if used := n.Status().Store.Bytes; used != 8<<20 {
		t.Errorf("store usage during a fetch of 8 MiB = %d; the fetch reserves its size", used)
	}
	n.stop()
	<-done
	info, err := os.Stat(partial)
	if err != nil {
		t.Fatalf("the partial file is gone after the shutdown: %v", err)
	}

	cfg.StoreMaxBytes = 6 << 20
	n2 := startAgentConfig(t, cfg)
	if used := n2.Status().Store.Bytes; used != info.Size() {
		t.Fatalf("store usage after the restart = %d, want the partial file's %d", used, info.Size())
	}
	if body, err := getBlob(t, n2.host, "test/big", d2); err != nil || !bytes.Equal(body, second) {
		t.Fatalf("pull: %v", err)
	}
	// The partial and the new blob's reservation pass the limit: GC evicts the partial.
	waitFor(t, func() bool { _, err := os.Stat(partial); return os.IsNotExist(err) }, "GC to evict the partial file")
	deadline := time.Now().Add(10 * time.Second)
	for st := n2.Status().Store; st.Objects != 1 || st.Pending != 0; st = n2.Status().Store {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for the commit: store %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if used := n2.Status().Store.Bytes; used != int64(len(second)) {
		t.Errorf("store usage %d, want the committed blob's %d", used, len(second))
	}
}

// A seed (authorized by the operator) is trusted with sizes: with the origin down and no record,
// a node takes a blob's size from a seed and the bytes from its peers.
func TestSeedBindsSize(t *testing.T) {
	o := startOrigin(t)
	big, d := randomBlob(t, 3<<20)
	pushBlob(t, o, "test/app", big, d)
	s := startTrusting(t, t.TempDir(), o.URL(), true, 0)
	if body, err := getBlob(t, s.host, "test/app", d); err != nil || !bytes.Equal(body, big) {
		t.Fatalf("seeding: %v", err)
	}
	b := startTrusting(t, t.TempDir(), o.URL(), false, 0, s.Node().Addrs()...)
	waitProvided(t, b, d.String())
	waitFor(t, func() bool { return len(b.Node().Seeds(context.Background())) > 0 }, "the seed to be known")
	o.Close()

	status, length, body := getBlobResp(t, b.host, "test/app", d)
	if status != http.StatusOK || length != int64(len(big)) || !bytes.Equal(body, big) {
		t.Fatalf("GET: %d, Content-Length %d, %d bytes", status, length, len(body))
	}
}

// A blob whose size nothing trusted gives (no origin, no record, no seed) still comes whole, in
// one chunk verified by its digest, from any of its providers: providers that hold nothing (a
// provider record outlives the node that made it) are skipped, not taken as the end of the
// fetch. Three of the four providers of each blob hold nothing, in an order the DHT decides.
func TestUnknownSizeSkipsProvidersThatFail(t *testing.T) {
	ctx := context.Background()
	n := startAgentConfig(t, agent.Config{DataDir: t.TempDir(), ChunkSize: 1 << 20, PieceSize: 1 << 20,
		P2P: &p2p.Config{ListenAddrs: []string{loopback}}})
	honest := transfer.NewMemoryContent()
	holder := startTestPeer(t, honest, n.Node().Addrs()...)
	var blobs [][]byte
	var ds []digest.Digest
	for range 3 {
		b, d := randomBlob(t, 32<<10)
		honest.Put(d, "", b)
		blobs, ds = append(blobs, b), append(ds, d)
	}
	var peers []*p2p.Node
	for range 3 {
		peers = append(peers, startTestPeer(t, transfer.NewMemoryContent(), n.Node().Addrs()...))
	}
	for _, d := range ds {
		for _, p := range append(peers, holder) {
			if err := p.Provide(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, d := range ds {
		waitFor(t, func() bool {
			lctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			ps, _ := n.Node().FindProviders(lctx, d)
			return len(ps) == 4
		}, "the four providers of "+d.String())
	}
	for i, d := range ds {
		if body, err := getBlob(t, n.host, "site/app", d); err != nil || !bytes.Equal(body, blobs[i]) {
			t.Fatalf("blob %d: %v", i, err)
		}
	}
}
