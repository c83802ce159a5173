package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/p2p/transfer"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// Router is what the fetch pipeline needs of the peer network: content routing and connection
// protection. *p2p.Node implements it.
type Router interface {
	FindProviders(ctx context.Context, d digest.Digest) ([]peer.AddrInfo, error)
	Provide(ctx context.Context, d digest.Digest) error
	StopProviding(d digest.Digest)
	Peers() []peer.ID
	Protect(p peer.ID, tag string)
	Unprotect(p peer.ID, tag string)
}

const (
	// lookupTimeout bounds a provider lookup: past it the pipeline goes on to the origin.
	lookupTimeout = 2 * time.Second
	// penaltyDuration is how long a peer that sent bytes failing verification is ignored.
	penaltyDuration = 10 * time.Minute
	// peerTagTimeout bounds asking peers for a tag while the origin is down.
	peerTagTimeout = 3 * time.Second
	// maxTagPeers is how many connected peers are asked for a tag.
	maxTagPeers = 16
	// maxManifestProviders and peerManifestTimeout bound asking peers for a manifest, so that
	// unresponsive providers cannot eat the time the origin fallback needs.
	maxManifestProviders = 3
	peerManifestTimeout  = 3 * time.Second
)

// minPeerRate is the slowest a peer may deliver a chunk before it is dropped for the next one,
// after a grace of chunkGrace for the request itself.
var (
	minPeerRate int64 = 256 << 10
	chunkGrace        = 10 * time.Second
)

// chunkDeadline is the time a peer gets to deliver n bytes.
func chunkDeadline(n int64) time.Duration {
	return chunkGrace + time.Duration(n*int64(time.Second)/minPeerRate)
}

// peerSet tracks peers that sent bad bytes, and peers not to take one digest from.
type peerSet struct {
	mu       sync.Mutex
	until    map[peer.ID]time.Time
	excluded map[digestPeer]time.Time
}

type digestPeer struct {
	d digest.Digest
	p peer.ID
}

// excludeFor keeps ps out of fetches of d for penaltyDuration, without blaming them.
func (s *peerSet) excludeFor(d digest.Digest, ps []peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.excluded == nil {
		s.excluded = map[digestPeer]time.Time{}
	}
	now := time.Now()
	for k, t := range s.excluded {
		if now.After(t) {
			delete(s.excluded, k)
		}
	}
	for _, p := range ps {
		s.excluded[digestPeer{d, p}] = now.Add(penaltyDuration)
	}
}

// excludedFor reports whether p is kept out of fetches of d.
func (s *peerSet) excludedFor(d digest.Digest, p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.excluded[digestPeer{d, p}]
	return ok && time.Now().Before(t)
}

func (s *peerSet) penalize(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.until == nil {
		s.until = map[peer.ID]time.Time{}
	}
	s.until[p] = time.Now().Add(penaltyDuration)
}

func (s *peerSet) penalized(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.until[p]
	if ok && time.Now().After(t) {
		delete(s.until, p)
		return false
	}
	return ok
}

func (a *Agent) blamePeer(p peer.ID, d digest.Digest, err error) {
	a.penalties.penalize(p)
	a.metrics.verifyFailures.WithLabelValues("peer").Inc()
	a.metrics.peerVerifyFailures.WithLabelValues(p.String()).Inc()
	a.log.Error("peer sent content failing verification; ignoring it for a while",
		"peer", p, "digest", d, "err", err, "penalty", penaltyDuration)
}

// providers looks up peers holding d, without ones in the penalty box.
func (a *Agent) providers(ctx context.Context, d digest.Digest) ([]peer.AddrInfo, error) {
	if a.router == nil {
		return nil, fmt.Errorf("%s: peer-to-peer disabled: %w", d, errdefs.ErrNotFound)
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	found, err := a.router.FindProviders(lctx, d)
	var out []peer.AddrInfo
	for _, p := range found {
		if !a.penalties.penalized(p.ID) && !a.penalties.excludedFor(d, p.ID) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		if err == nil {
			err = fmt.Errorf("%s: no peer provides it: %w", d, errdefs.ErrNotFound)
		}
		return nil, err
	}
	return out, nil
}

// peerSource fetches blobs from peers: small ones whole, verified by their digest; larger ones
// by swarming their chunks (swarm.go), each verified against the blob's chunk map.
type peerSource struct{ a *Agent }

func (peerSource) Name() string { return "peer" }

func (s peerSource) FetchBlob(ctx context.Context, t registryapi.Target, d digest.Digest, _, _ int64) (io.Closer, int64, error) {
	a := s.a
	provs, err := a.providers(ctx, d)
	if err != nil && a.node != nil && ctx.Err() == nil {
		// Nobody found, or the lookup timed out (a loaded DHT): either way the coordinator, not
		// this node, goes to the origin.
		provs, err = a.viaCoordinator(ctx, t, d)
	}
	if err != nil {
		return nil, 0, err
	}
	sw := newSwarmFetch(a, ctx, d, provs)
	// The short path: ask the first provider for the first chunk straight away. A blob of one
	// chunk (manifests' configs, small layers) is then done, verified by its digest, without a
	// chunk map round trip; a larger one keeps the chunk for when the map comes.
	if small, size, ok := sw.firstChunk(); ok {
		return small, size, nil
	}
	if err := sw.loadMap(); err != nil {
		sw.Close()
		return nil, 0, err
	}
	return sw, sw.m.Size, nil
}

const (
	// coordinatorTimeout bounds asking the coordinator to fetch a blob: past it, this node goes
	// to the origin itself.
	coordinatorTimeout = 5 * time.Second
)

// viaCoordinator handles a blob nobody provides: the digest's coordinator fetches it from the
// origin once for the cluster and serves it as it arrives, so a thousand nodes asking at once
// cost the origin one fetch. This node goes to the origin itself only when it is the coordinator
// (or alone), or when the coordinator does not answer in time.
func (a *Agent) viaCoordinator(ctx context.Context, t registryapi.Target, d digest.Digest) ([]peer.AddrInfo, error) {
	cctx, cancel := context.WithTimeout(ctx, coordinatorTimeout)
	defer cancel()
	c, self, err := a.node.Coordinator(cctx, d)
	if err != nil {
		a.log.Info("no coordinator found; going to the origin", "digest", d, "err", err)
		return nil, fmt.Errorf("%s: no coordinator: %v: %w", d, err, errdefs.ErrNotFound)
	}
	if self {
		return nil, fmt.Errorf("%s: this node coordinates it: %w", d, errdefs.ErrNotFound)
	}
	if err := a.peers.Pull(cctx, c, hostOf(t), t.Repo, d); err != nil {
		a.log.Info("coordinator did not take the fetch; going to the origin", "digest", d, "coordinator", c, "err", err)
		return nil, fmt.Errorf("%s: coordinator %s: %w", d, c, errdefs.ErrNotFound)
	}
	a.log.Debug("coordinator is fetching the blob for the cluster", "digest", d, "coordinator", c)
	return []peer.AddrInfo{{ID: c}}, nil
}

// firstChunk fetches the first chunk from the first provider. For a blob of one chunk it returns
// the whole blob, verified by its digest; for a larger one it keeps the bytes (unverified) in
// r.first for Fill to verify once the map is in. It is a swarm request: a provider already
// sending the chunk declines, and the swarm then takes it from whoever receives it.
func (r *swarmFetch) firstChunk() (io.ReadCloser, int64, bool) {
	p := r.provs[0].ID
	ctx, cancel := context.WithTimeout(r.ctx, chunkDeadline(r.a.cfg.ChunkSize))
	defer cancel()
	rng, err := r.a.peers.GetChunk(ctx, p, r.d, 0, r.a.cfg.ChunkSize, true)
	if err != nil {
		return nil, 0, false
	}
	defer rng.Close()
	rng.SetDeadline(time.Now().Add(chunkDeadline(r.a.cfg.ChunkSize)))
	n := rng.Length
	data := r.a.chunkBuf(n)
	if _, err := io.ReadFull(r.a.download.Reader(ctx, rng), data); err != nil {
		r.a.putChunkBuf(data)
		return nil, 0, false
	}
	if rng.Size > r.a.cfg.ChunkSize {
		r.first, r.firstFrom = data, p
		return nil, 0, false
	}
	if r.d.Algorithm().FromBytes(data) != r.d {
		r.a.blamePeer(p, r.d, errors.New("blob bytes do not match the digest"))
		r.failed[p] = true
		return nil, 0, false
	}
	r.a.metrics.fetchProviders.Observe(1)
	return io.NopCloser(bytes.NewReader(data)), rng.Size, true
}

// loadMap takes the chunk map and holdings from the first provider that answers, cross-checked
// against a second one when there is one: two providers disagreeing means one lies, and neither
// is used.
func (r *swarmFetch) loadMap() error {
	type result struct {
		p    peer.ID
		m    *chunks.Map
		have *chunks.Set
	}
	var got []result
	for _, p := range r.provs {
		if len(got) == 2 {
			break
		}
		mctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		m, have, err := r.a.peers.Holding(mctx, p.ID, r.d, r.a.cfg.ChunkSize, 0, 0)
		cancel()
		if err != nil {
			if errors.Is(err, chunks.ErrMismatch) {
				r.a.blamePeer(p.ID, r.d, err)
			}
			r.failed[p.ID] = true
			continue
		}
		got = append(got, result{p: p.ID, m: m, have: have})
	}
	switch {
	case len(got) == 0:
		return fmt.Errorf("%s: no provider answered with a chunk map: %w", r.d, errdefs.ErrUnavailable)
	case len(got) == 2 && (got[0].m.Size != got[1].m.Size || !got[0].m.Extends(got[1].m) && !got[1].m.Extends(got[0].m)):
		r.a.log.Warn("providers disagree on a chunk map; using neither", "digest", r.d, "peers", []peer.ID{got[0].p, got[1].p})
		return fmt.Errorf("%s: providers disagree on its chunk map: %w", r.d, errdefs.ErrUnavailable)
	}
	// Providers still fetching the blob send partial maps; start from the first and let the
	// second extend it (the states both sent are confirmed).
	r.peers = map[peer.ID]*swarmPeer{}
	r.m = got[0].m
	r.from = make([]peer.ID, r.m.Len())
	r.conf = make([]bool, r.m.Len())
	for j := range r.from {
		r.from[j] = got[0].p
	}
	r.conf[0] = true // the initial state is fixed
	for _, g := range got {
		r.learn(r.peer(g.p), g.m, g.have)
	}
	return nil
}

// peerBlobSize asks a provider for a blob's size (an empty range), for HEAD while the origin is down.
func (a *Agent) peerBlobSize(ctx context.Context, d digest.Digest) (int64, error) {
	provs, err := a.providers(ctx, d)
	if err != nil {
		return 0, err
	}
	var lastErr error
	for _, p := range provs {
		rng, err := a.peers.Get(ctx, p.ID, d, 0, 0)
		if err != nil {
			lastErr = err
			continue
		}
		rng.Close()
		return rng.Size, nil
	}
	return 0, lastErr
}

// peerManifest fetches a manifest by digest from a peer: whole (manifests are small), verified
// against its digest, with the media type taken from the manifest itself where it says.
func (a *Agent) peerManifest(ctx context.Context, d digest.Digest) (*registryapi.Manifest, error) {
	provs, err := a.providers(ctx, d)
	if err != nil {
		return nil, err
	}
	var lastErr error
	if len(provs) > maxManifestProviders {
		provs = provs[:maxManifestProviders]
	}
	for _, p := range provs {
		body, mt, err := a.peerManifestFrom(ctx, p.ID, d)
		if err != nil {
			lastErr = err
			continue
		}
		if err := a.store.PutManifest(d, mt, body); err != nil {
			a.log.Error("storing manifest failed", "digest", d, "err", err)
		} else {
			a.announce(d)
		}
		return &registryapi.Manifest{MediaType: mt, Digest: d, Body: body, Source: "peer"}, nil
	}
	return nil, lastErr
}

func (a *Agent) peerManifestFrom(ctx context.Context, p peer.ID, d digest.Digest) ([]byte, string, error) {
	gctx, cancel := context.WithTimeout(ctx, peerManifestTimeout)
	defer cancel()
	rng, err := a.peers.Get(gctx, p, d, 0, -1)
	if err != nil {
		return nil, "", err
	}
	defer rng.Close()
	if rng.Size > origin.MaxManifestSize {
		return nil, "", fmt.Errorf("%s from %s: %d bytes: %w", d, p, rng.Size, errdefs.ErrTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(rng, origin.MaxManifestSize+1))
	if err != nil {
		return nil, "", err
	}
	if d.Algorithm().FromBytes(body) != d {
		a.blamePeer(p, d, errors.New("manifest bytes do not match the digest"))
		return nil, "", fmt.Errorf("%s from %s: %w", d, p, errdefs.ErrDigestMismatch)
	}
	mt := manifestMediaType(body, rng.MediaType)
	if mt == "" {
		return nil, "", fmt.Errorf("%s from %s: no usable media type: %w", d, p, errdefs.ErrInvalid)
	}
	return body, mt, nil
}

// manifestMediaType decides a peer-supplied manifest's media type. The digest covers the body,
// not the peer's claim, so the body's own mediaType field wins; a claim is accepted only when
// the body has none and its shape (index or image manifest) fits the claim.
func manifestMediaType(body []byte, claimed string) string {
	var m struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
		Layers    []json.RawMessage `json:"layers"`
	}
	if json.Unmarshal(body, &m) != nil {
		return ""
	}
	if m.MediaType != "" {
		return m.MediaType
	}
	isIndex := m.Manifests != nil
	switch claimed {
	case "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json":
		if isIndex {
			return claimed
		}
	case "":
		return ""
	default:
		if !isIndex {
			return claimed
		}
	}
	return ""
}

// peerTagRecords asks connected peers what a tag resolved to, for when the origin is down.
func (a *Agent) peerTagRecords(ctx context.Context, t registryapi.Target, tag string) []store.TagRecord {
	if a.router == nil {
		return nil
	}
	peers := a.router.Peers()
	if len(peers) > maxTagPeers {
		peers = peers[:maxTagPeers]
	}
	ctx, cancel := context.WithTimeout(ctx, peerTagTimeout)
	defer cancel()
	var mu sync.Mutex
	var out []store.TagRecord
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs, err := a.peers.Tags(ctx, p, hostOf(t), t.Repo, tag)
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			now := time.Now()
			for _, r := range recs {
				if r.Digest.Validate() != nil {
					continue
				}
				// A record from the future would win every comparison: clamp it to now.
				if r.Resolved.After(now) {
					r.Resolved = now
				}
				out = append(out, store.TagRecord{Digest: r.Digest, MediaType: r.MediaType, Resolved: r.Resolved})
			}
		}()
	}
	wg.Wait()
	return out
}

// announce advertises committed content to the cluster, in the background.
func (a *Agent) announce(d digest.Digest) {
	if a.router == nil {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx, cancel := context.WithTimeout(a.lifetime, time.Minute)
		defer cancel()
		if err := a.router.Provide(ctx, d); err != nil && ctx.Err() == nil {
			a.log.Debug("providing failed", "digest", d, "err", err)
		}
	}()
}

// content serves this node's committed content to peers (transfer.Content).
type content struct{ a *Agent }

var (
	_ transfer.Content = content{}
	_ transfer.Holder  = content{}
)

// OpenContent serves committed content, or a blob this node is still fetching: peers then read
// its bytes as they land (a read waits for them), verifying each chunk against this node's map.
func (c content) OpenContent(d digest.Digest) (transfer.Blob, error) {
	f, info, err := c.a.store.Open(d)
	if err == nil {
		return &fileContent{File: f, size: info.Size, mediaType: info.MediaType}, nil
	}
	if fe := c.a.servableFetch(d); fe != nil {
		return &fetchContent{f: fe}, nil
	}
	return nil, err
}

// servableFetch returns the fetch of d in flight, with a reference taken, if its size is known.
func (a *Agent) servableFetch(d digest.Digest) *fetch {
	a.mu.Lock()
	f, ok := a.inflight[d]
	if ok {
		f.acquire()
	}
	a.mu.Unlock()
	if !ok {
		return nil
	}
	select {
	case <-f.ready:
		if f.w != nil && f.size >= 0 {
			return f
		}
	default:
	}
	f.release()
	return nil
}

// Pull starts fetching d for the cluster, as its coordinator, and returns once the fetch is
// under way (or the content is held). Only configured registries are fetched from.
func (c content) Pull(ctx context.Context, registry, repo string, d digest.Digest) error {
	a := c.a
	reg, err := a.upstreams.Select(registry)
	if err != nil {
		return err
	}
	if !names.ValidRepository(repo) {
		return fmt.Errorf("repository %q: %w", repo, errdefs.ErrInvalid)
	}
	if _, err := a.store.Stat(d); err == nil {
		return nil
	}
	a.metrics.coordinated.Inc()
	// The coordinator goes to the origin: asked because nobody (trusted) provides the blob, it must
	// not relay what some peer claims.
	f, hit, err := a.joinFetch(registryapi.Target{Registry: reg, Repo: repo}, d, a.originOnly)
	if err != nil {
		return err
	}
	if hit != nil {
		return hit.Close()
	}
	defer f.release()
	select {
	case <-f.ready:
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", d, errdefs.ErrUnavailable)
	}
	if f.w == nil {
		_, _, _, err := f.state()
		return err
	}
	return nil
}

// ChunkMap answers only in the node's own chunk size (the cluster's, by configuration): a map
// in another size would cost a full read of the blob per request.
func (c content) ChunkMap(ctx context.Context, d digest.Digest, chunkSize int64) (*chunks.Map, error) {
	if chunkSize != c.a.cfg.ChunkSize {
		return nil, fmt.Errorf("chunk size %d: this node uses %d: %w", chunkSize, c.a.cfg.ChunkSize, errdefs.ErrUnsupported)
	}
	if f := c.a.servableFetch(d); f != nil {
		defer f.release()
		if m := f.w.PartialMap(); m != nil {
			return m, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.a.store.ChunkMap(ctx, d, chunkSize)
}

// Holding reports the chunks of a blob in flight that this node holds, for peers watching it.
func (c content) Holding(d digest.Digest, chunkSize int64) (*chunks.Set, <-chan struct{}, bool) {
	if chunkSize != c.a.cfg.ChunkSize {
		return nil, nil, false
	}
	f := c.a.servableFetch(d)
	if f == nil {
		return nil, nil, false
	}
	defer f.release()
	_, done, wake, _ := f.state()
	return f.w.Held(), wake, !done
}

// fetchContent is a blob being fetched, served to a peer: reads wait for bytes to land.
type fetchContent struct {
	f    *fetch
	once sync.Once
}

func (c *fetchContent) Size() int64       { return c.f.size }
func (c *fetchContent) MediaType() string { return "" }
func (c *fetchContent) Close() error      { c.once.Do(c.f.release); return nil }

// inProgressWait bounds how long a peer's read waits for bytes that have not landed.
const inProgressWait = 30 * time.Second

func (c *fetchContent) ReadAt(p []byte, off int64) (int, error) {
	timer := time.NewTimer(inProgressWait)
	defer timer.Stop()
	for {
		visible, done, wake, err := c.f.state()
		// Bytes in chunks held verified, or in the prefix released to local clients.
		end := off + int64(len(p))
		if c.f.w.Holds(off, int64(len(p))) {
			visible = end
		}
		if end <= visible || (done && err == nil) {
			n, rerr := c.f.w.File().ReadAt(p[:max(0, min(int64(len(p)), visible-off))], off)
			if rerr == nil && n < len(p) {
				rerr = io.EOF
			}
			return n, rerr
		}
		if done {
			return 0, err
		}
		select {
		case <-wake:
		case <-timer.C:
			return 0, fmt.Errorf("%s: no bytes at %d for %s: %w", c.f.d, off, inProgressWait, errdefs.ErrUnavailable)
		}
	}
}

func (c content) TagRecords(registry, repo, tag string) ([]transfer.TagRecord, error) {
	recs, err := c.a.store.Tags(registry + "/" + repo + ":" + tag + "\x00")
	if err != nil {
		return nil, err
	}
	var out []transfer.TagRecord
	for _, r := range recs {
		out = append(out, transfer.TagRecord{Digest: r.Digest, MediaType: r.MediaType, Resolved: r.Resolved})
	}
	return out, nil
}

type fileContent struct {
	*os.File
	size      int64
	mediaType string
}

func (f *fileContent) Size() int64       { return f.size }
func (f *fileContent) MediaType() string { return f.mediaType }
