package resolve

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/internal/tags"
)

// Resolution is a tag's manifest and when the tag was resolved at the origin: now, or earlier
// for a stale answer served while the origin is down.
type Resolution struct {
	Manifest *Manifest
	Resolved time.Time
}

// Record is the resolution as a tag record.
func (res Resolution) Record() tags.Record {
	return tags.Record{Digest: res.Manifest.Digest, MediaType: res.Manifest.MediaType, Resolved: res.Resolved}
}

const (
	// tagCoordinatorTimeout bounds asking the tag's coordinator; past it the node asks the origin.
	tagCoordinatorTimeout = 5 * time.Second
	// hostedTimeout bounds asking the seeds what a hosted tag names.
	hostedTimeout = 3 * time.Second
	// joinGrace is how long after starting a node that knows no seed waits for one (up to
	// hostedTimeout per tag) before it answers that no seed hosts a tag.
	joinGrace = 10 * time.Second
)

// Tag resolves a tag, trying in order:
//
//  1. fresh: this node's record of the tag, younger than the TTL;
//  2. coordinator (viaCoordinator only): the tag's coordinator, an authorized seed (else the
//     node XOR-closest to the tag's DHT key), so that a burst of a thousand nodes costs the
//     origin one request per TTL (a coordinator resolving for others resolves itself); a
//     coordinator that is not an authorized seed is a hint, confirmed by a HEAD at the origin;
//  3. origin: a HEAD, then a GET only when the manifest is not stored yet;
//  4. seeds, instead of 2 and 3 for a target in the hosted namespace (which has no origin): the
//     seeds' hosted (pushed) repositories, the newest push winning; only authorized seeds answer;
//  5. stale: when the origin cannot be reached, the newest record this node or an authorized
//     seed saw.
//
// Steps 2 to 5 run once per tag and Accept set at a time, however many clients ask.
func (r *Resolver) Tag(ctx context.Context, t fetch.Target, tag string, accept []string, viaCoordinator bool) (Resolution, error) {
	// Peers' resolve requests carry Accept lists of their own: the same few sets as local
	// clients', whatever they send.
	accept = oci.NormalizeAccept(accept)
	key := tags.Key(t.Host(), t.Repo, tag, accept)
	if res, ok := r.fresh(key); ok {
		return res, nil
	}
	ch := r.group.DoChan("tag\x00"+key, func() (any, error) {
		if res, ok := r.fresh(key); ok {
			return res, nil // recorded by a resolution that ended since this caller looked
		}
		octx, cancel := r.life.Context(originTimeout)
		defer cancel()
		octx = credential.NewContext(octx, t.Access()) // what peers asked for it need
		return r.resolveOnce(octx, t, tag, accept, key, viaCoordinator)
	})
	slow := time.NewTimer(slowOrigin)
	defer slow.Stop()
	for {
		select {
		case res := <-ch:
			if res.Err != nil {
				return Resolution{}, res.Err
			}
			return res.Val.(Resolution), nil
		case <-slow.C:
			// An origin this slow counts as unreachable for this client: the last known
			// resolution is served while the resolution goes on for the next one. A client
			// waits on a mirror without a timeout of its own.
			sctx, cancel := context.WithTimeout(ctx, hostedTimeout)
			res, ok := r.stale(sctx, t, tag, accept)
			cancel()
			if ok {
				r.metrics.Stale.Inc()
				r.log.Warn("origin slow to resolve a tag; serving the last known resolution (stale) meanwhile",
					"repo", t.Repo, "tag", tag, "digest", res.Manifest.Digest, "resolved", res.Resolved, "after", slowOrigin)
				return res, nil
			}
		case <-ctx.Done():
			// The resolution goes on for the clients still waiting, and is recorded.
			return Resolution{}, fmt.Errorf("tag %s:%s: %w: %w", t.Repo, tag, context.Cause(ctx), errdefs.ErrUnavailable)
		}
	}
}

// slowOrigin is how long a client waits for a tag's resolution before the last known one, when
// there is one, is served as stale: well inside the HTTP edge's first-byte bound.
const slowOrigin = 10 * time.Second

// fresh is step 1.
func (r *Resolver) fresh(key string) (Resolution, bool) {
	recs, err := r.st.Tags().List(key)
	if err != nil {
		return Resolution{}, false
	}
	rec, ok := recs[key]
	if !ok || time.Since(rec.Resolved) >= r.ttl {
		return Resolution{}, false
	}
	m, err := r.stored(rec.Digest)
	if err != nil {
		return Resolution{}, false
	}
	return Resolution{m, rec.Resolved}, true
}

// resolveOnce runs steps 2 to 5 and records what they find.
func (r *Resolver) resolveOnce(ctx context.Context, t fetch.Target, tag string, accept []string, key string, viaCoordinator bool) (Resolution, error) {
	var res Resolution
	var err error
	switch {
	case t.Hosted():
		// The hosted namespace has no origin: its tags are the seeds' pushes. They never answer
		// for an upstream's tag, nor an upstream for theirs.
		res, err = r.atSeeds(ctx, t, tag, accept)
	default:
		askedOrigin := false // a plain coordinator's hint was checked at the origin already
		if viaCoordinator && t.Registry != nil {
			res, askedOrigin, err = r.atCoordinator(ctx, t, tag, accept)
		}
		if res.Manifest == nil && (!askedOrigin || err == nil) {
			res, err = r.atOrigin(ctx, t, tag, accept)
		}
	}
	if err == nil {
		if age := time.Since(res.Resolved); age > r.ttl {
			// The coordinator answered from its last resolution: the origin is down for it too.
			r.metrics.Stale.Inc()
			r.log.Warn("origin unreachable for the tag's coordinator; serving its last known resolution (stale)",
				"repo", t.Repo, "tag", tag, "digest", res.Manifest.Digest, "resolved", res.Resolved)
		}
		if perr := r.st.Tags().Put(key, res.Record()); perr != nil {
			r.log.Error("recording tag failed", "repo", t.Repo, "tag", tag, "err", perr)
		}
		return res, nil
	}
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		// The origin says the tag is gone: forget it rather than serve it later as stale.
		if derr := r.st.Tags().Delete(tags.Prefix(t.Host(), t.Repo, tag)); derr != nil {
			r.log.Error("forgetting a deleted tag failed", "repo", t.Repo, "tag", tag, "err", derr)
		}
		return Resolution{}, err
	case errors.Is(err, errdefs.ErrDenied), errors.Is(err, errdefs.ErrTooLarge), errors.Is(err, errdefs.ErrDigestMismatch):
		return Resolution{}, err
	}
	if res, ok := r.stale(ctx, t, tag, accept); ok {
		r.metrics.Stale.Inc()
		r.log.Warn("origin unreachable; serving the last known tag resolution of this node or an authorized seed (stale)",
			"repo", t.Repo, "tag", tag, "digest", res.Manifest.Digest, "resolved", res.Resolved, "source", res.Manifest.Source, "err", err)
		return res, nil
	}
	return Resolution{}, err
}

// atCoordinator is step 2: it asks the tag's coordinator what the tag names, then gets that
// manifest by digest (store, peers, origin), verified. A digest proves the manifest's integrity,
// not that the tag names it, so only an authorized seed's answer is taken as it is; any other
// coordinator's is a hint, confirmed by a HEAD at the origin before it is used (askedOrigin
// is then true, and an error is the origin's: it is not asked again). It returns no manifest
// and no error when this node is the coordinator or the coordinator cannot answer: the origin
// is asked next.
func (r *Resolver) atCoordinator(ctx context.Context, t fetch.Target, tag string, accept []string) (res Resolution, askedOrigin bool, err error) {
	if r.cluster == nil {
		return Resolution{}, false, nil
	}
	cctx, cancel := context.WithTimeout(ctx, tagCoordinatorTimeout)
	defer cancel()
	c, self, err := r.cluster.CoordinatorFor(cctx, "shoal-tag:"+tags.Prefix(t.Host(), t.Repo, tag))
	if err != nil || self {
		return Resolution{}, false, nil
	}
	rec, err := r.cluster.Resolve(cctx, c, t.Host(), t.Repo, tag, accept)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			// The origin, through the coordinator, says no such tag; the origin is asked
			// again all the same, as the coordinator's word alone settles nothing.
			return Resolution{}, false, err
		}
		r.log.Info("tag coordinator did not answer; asking the origin", "repo", t.Repo, "tag", tag, "coordinator", c, "err", err)
		return Resolution{}, false, nil
	}
	resolved := rec.Resolved
	if now := time.Now(); resolved.After(now) {
		resolved = now // a resolution from the future would look fresh for ever
	}
	if !r.cluster.AuthorizedSeed(cctx, c) {
		desc, herr := r.origin.HeadManifest(ctx, t.Registry, t.Repo, tag, accept)
		switch {
		case errors.Is(herr, errdefs.ErrUnsupported):
			return Resolution{}, false, nil // no digest in the origin's HEAD: step 3 GETs the tag
		case herr != nil:
			// The origin cannot confirm, or says no: a plain coordinator's word is not taken.
			return Resolution{}, true, herr
		case desc.Digest != rec.Digest:
			r.log.Warn("the tag's coordinator, not an authorized seed, named another manifest than the origin; the origin's is used",
				"repo", t.Repo, "tag", tag, "coordinator", c, "claimed", rec.Digest, "origin", desc.Digest)
		}
		rec.Digest, resolved = desc.Digest, time.Now()
	}
	m, err := r.ByDigest(ctx, t, rec.Digest, accept)
	if err != nil || !accepts(accept, m.MediaType) {
		return Resolution{}, false, nil
	}
	return Resolution{m, resolved}, false, nil
}

// atOrigin is step 3: a HEAD first, which is cheaper and not rate limited by Docker Hub, then a
// GET only if the manifest isn't stored yet.
func (r *Resolver) atOrigin(ctx context.Context, t fetch.Target, tag string, accept []string) (Resolution, error) {
	if t.Registry == nil {
		return Resolution{}, fmt.Errorf("tag %s:%s: %w", t.Repo, tag, fetch.ErrNoOrigin)
	}
	desc, err := r.origin.HeadManifest(ctx, t.Registry, t.Repo, tag, accept)
	switch {
	case err == nil:
		if m, serr := r.stored(desc.Digest); serr == nil {
			return Resolution{m, time.Now()}, nil
		}
	case errors.Is(err, errdefs.ErrUnsupported):
		// No digest in the HEAD answer: fall through to GET.
	default:
		return Resolution{}, err
	}
	om, err := r.origin.GetManifest(ctx, t.Registry, t.Repo, tag, accept)
	if err != nil {
		return Resolution{}, err
	}
	return Resolution{r.keep(om.Digest, om.MediaType, om.Body, "origin"), time.Now()}, nil
}

// atSeeds is step 4: it asks this node and the cluster's seeds what a tag of a hosted (pushed)
// repository names, takes the newest push, and gets that manifest by digest, verified. Only for
// targets in the hosted namespace: the question names no registry ("" on the wire).
func (r *Resolver) atSeeds(ctx context.Context, t fetch.Target, tag string, accept []string) (Resolution, error) {
	var (
		mu    sync.Mutex
		best  tags.Record
		found bool
		// answers are the seeds' answers: those naming the winning digest hold its manifest.
		answers = map[peer.ID]digest.Digest{}
	)
	consider := func(p peer.ID, rec tags.Record) {
		mu.Lock()
		defer mu.Unlock()
		if rec.Digest.Validate() != nil || !accepts(accept, rec.MediaType) {
			return
		}
		answers[p] = rec.Digest
		if now := time.Now(); rec.Resolved.After(now) {
			rec.Resolved = now // a record from the future would win every comparison
		}
		if !found || rec.Resolved.After(best.Resolved) {
			best, found = rec, true
		}
	}
	if r.hosted != nil {
		if rec, ok := r.hosted.HostedTag(t.Repo, tag); ok {
			consider("", rec)
		}
	}
	if r.cluster != nil {
		hctx, cancel := context.WithTimeout(ctx, hostedTimeout)
		defer cancel()
		var wg sync.WaitGroup
		for _, p := range r.seeds(hctx) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if rec, err := r.cluster.Resolve(hctx, p, "", t.Repo, tag, accept); err == nil {
					consider(p, rec)
				}
			}()
		}
		wg.Wait()
	}
	if !found {
		return Resolution{}, fmt.Errorf("tag %s:%s: no seed hosts it: %w", t.Repo, tag, errdefs.ErrNotFound)
	}
	var holders []peer.ID
	for p, d := range answers {
		if p != "" && d == best.Digest {
			holders = append(holders, p)
		}
	}
	m, err := r.byDigest(ctx, t, best.Digest, accept, holders)
	if err != nil {
		return Resolution{}, err
	}
	return Resolution{m, time.Now()}, nil
}

// seeds are the live authorized seeds other than this node. A node that has only just started
// may not have joined, or found the seeds, yet: for joinGrace after its start it waits for one
// (until ctx ends) rather than answer "unknown" to the first pull of hosted content.
// A seed knows one at once: itself.
func (r *Resolver) seeds(ctx context.Context) []peer.ID {
	seeds := r.cluster.Seeds(ctx)
	for len(seeds) == 0 && time.Since(r.started) < joinGrace && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
		seeds = r.cluster.Seeds(ctx)
	}
	return slices.DeleteFunc(seeds, func(p peer.ID) bool { return p == r.cluster.Self() })
}

// stale is step 5: the newest resolution of the tag that this node or an authorized seed saw,
// whose manifest the client accepts and can be had (from the store, else from peers, verified
// by digest). Other peers' records are never asked for: a tag's digest is metadata.
func (r *Resolver) stale(ctx context.Context, t fetch.Target, tag string, accept []string) (Resolution, bool) {
	var candidates []tags.Record
	if recs, err := r.st.Tags().List(tags.Prefix(t.Host(), t.Repo, tag)); err == nil {
		for _, rec := range recs {
			candidates = append(candidates, rec)
		}
	}
	if r.peers != nil && r.cluster != nil {
		var seeds []peer.ID
		for _, p := range r.cluster.Seeds(ctx) {
			if p != r.cluster.Self() {
				seeds = append(seeds, p)
			}
		}
		if len(seeds) > 0 {
			candidates = append(candidates, r.peers.TagRecords(ctx, seeds, t.Host(), t.Repo, tag)...)
		}
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].Resolved.After(candidates[j].Resolved) })
	for _, rec := range candidates {
		if !accepts(accept, rec.MediaType) {
			continue
		}
		// The record's media type is only a claim: check the manifest's own.
		if m, err := r.stored(rec.Digest); err == nil && accepts(accept, m.MediaType) {
			return Resolution{m, rec.Resolved}, true
		}
		if m, err := r.fromPeers(ctx, rec.Digest, nil); err == nil && accepts(accept, m.MediaType) {
			return Resolution{m, rec.Resolved}, true
		}
	}
	return Resolution{}, false
}
