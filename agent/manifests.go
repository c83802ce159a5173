package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/p2p/transfer"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// manifestTypes are asked for when fetching a manifest by digest, on top of the client's own
// Accept list: a digest names one manifest, whatever its type, and some registries refuse to
// return a type the request did not accept.
var manifestTypes = []string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}

// originTimeout bounds origin work done on behalf of several waiting clients, which must not
// die with the first client's request.
const originTimeout = 2 * time.Minute

// GetManifest returns a manifest by digest (from the store, else the origin) or by tag.
func (a *Agent) GetManifest(ctx context.Context, t registryapi.Target, ref string, accept []string) (*registryapi.Manifest, error) {
	if strings.Contains(ref, ":") {
		d, err := digest.Parse(ref)
		if err != nil {
			return nil, fmt.Errorf("reference %q: %w", ref, errdefs.ErrInvalid)
		}
		return a.manifestByDigest(ctx, t, d, accept)
	}
	return a.manifestByTag(ctx, t, ref, accept, true)
}

func (a *Agent) manifestByDigest(ctx context.Context, t registryapi.Target, d digest.Digest, accept []string) (*registryapi.Manifest, error) {
	if m, err := a.storedManifest(d); err == nil {
		return m, nil
	}
	v, err, _ := a.group.Do("manifest\x00"+d.String(), func() (any, error) {
		if m, err := a.storedManifest(d); err == nil {
			return m, nil
		}
		octx, cancel := context.WithTimeout(a.lifetime, originTimeout)
		defer cancel()
		if m, err := a.peerManifest(octx, d); err == nil {
			return m, nil
		}
		if t.Registry == nil {
			return nil, fmt.Errorf("manifest %s: %w", d, errNoOrigin)
		}
		om, err := a.origin.GetManifest(octx, t.Registry, t.Repo, d.String(), union(accept, manifestTypes))
		if err != nil {
			if errors.Is(err, errdefs.ErrDigestMismatch) {
				a.metrics.verifyFailures.WithLabelValues("origin").Inc()
				a.log.Error("origin manifest failed verification; discarded", "digest", d, "repo", t.Repo)
			}
			return nil, err
		}
		if err := a.store.PutManifest(om.Digest, om.MediaType, om.Body); err != nil {
			a.log.Error("storing manifest failed", "digest", d, "err", err)
		} else {
			a.announce(om.Digest)
		}
		return &registryapi.Manifest{MediaType: om.MediaType, Digest: om.Digest, Body: om.Body, Source: "origin"}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*registryapi.Manifest), nil
}

func (a *Agent) storedManifest(d digest.Digest) (*registryapi.Manifest, error) {
	body, mt, err := a.store.ReadManifest(d, origin.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	a.store.Touch(d)
	return &registryapi.Manifest{MediaType: mt, Digest: d, Body: body, Source: "cache"}, nil
}

// tagPrefix groups the resolutions of one tag; tagKey adds the normalised Accept set, since the
// origin may answer one tag with different manifests for different Accept lists.
func tagPrefix(t registryapi.Target, tag string) string {
	return hostOf(t) + "/" + t.Repo + ":" + tag + "\x00"
}

func tagKey(t registryapi.Target, tag string, accept []string) string {
	set := slices.Clone(accept)
	sort.Strings(set)
	return tagPrefix(t, tag) + strings.Join(slices.Compact(set), ",")
}

// manifestByTag resolves a tag: from a resolution younger than the tag TTL, else at the origin
// (one request per tag and Accept set at a time, however many clients ask), else — when the
// origin cannot be reached — from the last resolution known, marked stale.
//
// With viaCoordinator, the resolution goes through the tag's coordinator (the node XOR-closest to
// the tag's DHT key), so a burst of a thousand nodes costs the origin one request per tag TTL; a
// coordinator resolving for others resolves itself.
func (a *Agent) manifestByTag(ctx context.Context, t registryapi.Target, tag string, accept []string, viaCoordinator bool) (*registryapi.Manifest, error) {
	r, err := a.resolveTag(ctx, t, tag, accept, viaCoordinator)
	return r.m, err
}

// resolution is a tag's manifest and when the tag was resolved at the origin: now, or earlier
// for a stale answer served while the origin is down.
type resolution struct {
	m        *registryapi.Manifest
	resolved time.Time
}

func (a *Agent) resolveTag(ctx context.Context, t registryapi.Target, tag string, accept []string, viaCoordinator bool) (resolution, error) {
	key := tagKey(t, tag, accept)
	if recs, err := a.store.Tags(key); err == nil {
		if rec, ok := recs[key]; ok && time.Since(rec.Resolved) < a.cfg.TagTTL {
			if m, err := a.storedManifest(rec.Digest); err == nil {
				return resolution{m, rec.Resolved}, nil
			}
		}
	}
	v, err, _ := a.group.Do("tag\x00"+key, func() (any, error) {
		octx, cancel := context.WithTimeout(a.lifetime, originTimeout)
		defer cancel()
		var r resolution
		var err error
		if viaCoordinator && t.Registry != nil {
			r, err = a.resolveAtCoordinator(octx, t, tag, accept)
		}
		if r.m == nil {
			r.m, err = a.resolveAtOrigin(octx, t, tag, accept)
			r.resolved = time.Now()
		}
		if err != nil && !errors.Is(err, errdefs.ErrTooLarge) && !errors.Is(err, errdefs.ErrDigestMismatch) {
			// No origin, or it has no such tag (registries often answer an unknown repository
			// with 401), or it cannot be reached: a seed may host the repository (an image
			// pushed into the cluster). Without one, the origin's answer stands.
			if hm, herr := a.resolveHosted(octx, t, tag, accept); herr == nil {
				r, err = resolution{hm, time.Now()}, nil
			}
		}
		if err == nil {
			if age := time.Since(r.resolved); age > a.cfg.TagTTL {
				// The coordinator answered from its last resolution: the origin is down for it too.
				a.metrics.staleTags.Inc()
				a.log.Warn("origin unreachable for the tag's coordinator; serving its last known resolution (stale)",
					"repo", t.Repo, "tag", tag, "digest", r.m.Digest, "resolved", r.resolved)
			}
			rec := store.TagRecord{Digest: r.m.Digest, MediaType: r.m.MediaType, Resolved: r.resolved}
			if perr := a.store.PutTag(key, rec); perr != nil {
				a.log.Error("recording tag failed", "repo", t.Repo, "tag", tag, "err", perr)
			}
			return r, nil
		}
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			// The origin says the tag is gone: forget it rather than serve it later as stale.
			_ = a.store.DeleteTags(tagPrefix(t, tag))
			return nil, err
		case errors.Is(err, errdefs.ErrDenied), errors.Is(err, errdefs.ErrTooLarge), errors.Is(err, errdefs.ErrDigestMismatch):
			return nil, err
		}
		if m, rec, ok := a.staleResolution(octx, t, tag, accept); ok {
			a.metrics.staleTags.Inc()
			a.log.Warn("origin unreachable; serving the cluster's last known tag resolution (stale)",
				"repo", t.Repo, "tag", tag, "digest", m.Digest, "resolved", rec.Resolved, "source", m.Source, "err", err)
			return resolution{m, rec.Resolved}, nil
		}
		return nil, err
	})
	if err != nil {
		return resolution{}, err
	}
	return v.(resolution), nil
}

// tagCoordinatorTimeout bounds asking the tag's coordinator; past it the node asks the origin.
const tagCoordinatorTimeout = 5 * time.Second

// resolveAtCoordinator asks the tag's coordinator what the tag names, then gets that manifest by
// digest (store, peers, origin), verified. It returns nil, nil when this node is the coordinator
// or the coordinator cannot answer: the caller resolves at the origin itself.
func (a *Agent) resolveAtCoordinator(ctx context.Context, t registryapi.Target, tag string, accept []string) (resolution, error) {
	if a.node == nil {
		return resolution{}, nil
	}
	cctx, cancel := context.WithTimeout(ctx, tagCoordinatorTimeout)
	defer cancel()
	c, self, err := a.node.CoordinatorFor(cctx, "shoal-tag:"+tagPrefix(t, tag))
	if err != nil || self {
		return resolution{}, nil
	}
	rec, err := a.peers.Resolve(cctx, c, hostOf(t), t.Repo, tag, accept)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return resolution{}, err // the origin, through the coordinator, says no such tag
		}
		a.log.Info("tag coordinator did not answer; asking the origin", "repo", t.Repo, "tag", tag, "coordinator", c, "err", err)
		return resolution{}, nil
	}
	m, err := a.manifestByDigest(ctx, t, rec.Digest, accept)
	if err != nil || !accepts(accept, m.MediaType) {
		return resolution{}, nil
	}
	resolved := rec.Resolved
	if now := time.Now(); resolved.After(now) {
		resolved = now // a resolution from the future would look fresh for ever
	}
	return resolution{m, resolved}, nil
}

const (
	// hostedTimeout bounds asking the seeds what a hosted tag names.
	hostedTimeout = 3 * time.Second
	// joinGrace is how long after starting a node that knows no seed waits for one (up to
	// hostedTimeout per tag) before it answers that no seed hosts a tag.
	joinGrace = 10 * time.Second
)

// resolveHosted asks this node and the cluster's seeds what a tag of a hosted (pushed)
// repository names, takes the newest push, and gets that manifest by digest, verified.
func (a *Agent) resolveHosted(ctx context.Context, t registryapi.Target, tag string, accept []string) (*registryapi.Manifest, error) {
	var (
		mu    sync.Mutex
		best  transfer.TagRecord
		found bool
	)
	consider := func(rec transfer.TagRecord) {
		mu.Lock()
		defer mu.Unlock()
		if rec.Digest.Validate() != nil || !accepts(accept, rec.MediaType) {
			return
		}
		if now := time.Now(); rec.Resolved.After(now) {
			rec.Resolved = now // a record from the future would win every comparison
		}
		if !found || rec.Resolved.After(best.Resolved) {
			best, found = rec, true
		}
	}
	if a.ext.HostedTags != nil {
		if d, mt, at, ok := a.ext.HostedTags(t.Repo, tag); ok {
			consider(transfer.TagRecord{Digest: d, MediaType: mt, Resolved: at})
		}
	}
	if a.node != nil {
		hctx, cancel := context.WithTimeout(ctx, hostedTimeout)
		defer cancel()
		seeds := a.node.Seeds(hctx)
		// A node that has only just started may not have joined, or found the seeds, yet: give
		// it the time that takes rather than answer "unknown" to the first pull after a start.
		for len(seeds) == 0 && time.Since(a.started) < joinGrace && hctx.Err() == nil {
			select {
			case <-hctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
			seeds = a.node.Seeds(hctx)
		}
		var wg sync.WaitGroup
		for _, p := range seeds {
			if p == a.node.ID() {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if rec, err := a.peers.Resolve(hctx, p, "", t.Repo, tag, accept); err == nil {
					consider(rec)
				}
			}()
		}
		wg.Wait()
	}
	if !found {
		return nil, fmt.Errorf("tag %s:%s: no seed hosts it: %w", t.Repo, tag, errdefs.ErrNotFound)
	}
	return a.manifestByDigest(ctx, t, best.Digest, accept)
}

// Resolve answers a peer asking this node, the tag's coordinator, what a tag names. An empty
// registry asks about this node's hosted repositories (a seed's pushed images).
func (c content) Resolve(ctx context.Context, registry, repo, tag string, accept []string) (transfer.TagRecord, error) {
	if registry == "" {
		if !names.ValidTag(tag) || !names.ValidRepository(repo) {
			return transfer.TagRecord{}, fmt.Errorf("%q:%q: %w", repo, tag, errdefs.ErrInvalid)
		}
		if c.a.ext.HostedTags != nil {
			if d, mt, at, ok := c.a.ext.HostedTags(repo, tag); ok {
				return transfer.TagRecord{Digest: d, MediaType: mt, Resolved: at}, nil
			}
		}
		return transfer.TagRecord{}, fmt.Errorf("%s:%s: not hosted here: %w", repo, tag, errdefs.ErrNotFound)
	}
	reg, err := c.a.upstreams.Select(registry)
	if err != nil {
		return transfer.TagRecord{}, err
	}
	if !names.ValidTag(tag) || !names.ValidRepository(repo) {
		return transfer.TagRecord{}, fmt.Errorf("%q:%q: %w", repo, tag, errdefs.ErrInvalid)
	}
	r, err := c.a.resolveTag(ctx, registryapi.Target{Registry: reg, Repo: repo}, tag, accept, false)
	if err != nil {
		return transfer.TagRecord{}, err
	}
	// The time the origin was last asked, so that a stale answer stays marked stale.
	return transfer.TagRecord{Digest: r.m.Digest, MediaType: r.m.MediaType, Resolved: r.resolved}, nil
}

// resolveAtOrigin asks the origin which manifest a tag names: a HEAD first, which is cheaper and
// not rate limited by Docker Hub, then a GET only if the manifest isn't stored yet.
func (a *Agent) resolveAtOrigin(ctx context.Context, t registryapi.Target, tag string, accept []string) (*registryapi.Manifest, error) {
	if t.Registry == nil {
		return nil, fmt.Errorf("tag %s:%s: %w", t.Repo, tag, errNoOrigin)
	}
	desc, err := a.origin.HeadManifest(ctx, t.Registry, t.Repo, tag, accept)
	switch {
	case err == nil:
		if m, serr := a.storedManifest(desc.Digest); serr == nil {
			return m, nil
		}
	case errors.Is(err, errdefs.ErrUnsupported):
		// No digest in the HEAD answer: fall through to GET.
	default:
		return nil, err
	}
	om, err := a.origin.GetManifest(ctx, t.Registry, t.Repo, tag, accept)
	if err != nil {
		return nil, err
	}
	if err := a.store.PutManifest(om.Digest, om.MediaType, om.Body); err != nil {
		a.log.Error("storing manifest failed", "digest", om.Digest, "err", err)
	} else {
		a.announce(om.Digest)
	}
	return &registryapi.Manifest{MediaType: om.MediaType, Digest: om.Digest, Body: om.Body, Source: "origin"}, nil
}

// staleResolution finds the newest resolution of the tag that this node or its peers saw, whose
// manifest the client accepts and can be had (from the store, else from peers, verified by digest).
// Tags from peers are trusted only here, while the origin cannot answer.
func (a *Agent) staleResolution(ctx context.Context, t registryapi.Target, tag string, accept []string) (*registryapi.Manifest, store.TagRecord, bool) {
	var candidates []store.TagRecord
	if recs, err := a.store.Tags(tagPrefix(t, tag)); err == nil {
		for _, rec := range recs {
			candidates = append(candidates, rec)
		}
	}
	candidates = append(candidates, a.peerTagRecords(ctx, t, tag)...)
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].Resolved.After(candidates[j].Resolved) })
	for _, rec := range candidates {
		if !accepts(accept, rec.MediaType) {
			continue
		}
		// The record's media type is only a claim: check the manifest's own.
		if m, err := a.storedManifest(rec.Digest); err == nil && accepts(accept, m.MediaType) {
			return m, rec, true
		}
		if m, err := a.peerManifest(ctx, rec.Digest); err == nil && accepts(accept, m.MediaType) {
			return m, rec, true
		}
	}
	return nil, store.TagRecord{}, false
}

func accepts(accept []string, mt string) bool {
	if len(accept) == 0 {
		return true
	}
	for _, a := range accept {
		if a == mt || a == "*/*" {
			return true
		}
	}
	return false
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// Tags passes tag listing through to the origin.
func (a *Agent) Tags(ctx context.Context, t registryapi.Target, n int, last string) (*origin.Passthrough, error) {
	if t.Registry == nil {
		return nil, fmt.Errorf("tags of %s: %w", t.Repo, errNoOrigin)
	}
	return a.origin.Tags(ctx, t.Registry, t.Repo, n, last)
}

// Referrers passes the referrers API through to the origin.
func (a *Agent) Referrers(ctx context.Context, t registryapi.Target, d digest.Digest, artifactType string) (*origin.Passthrough, error) {
	if t.Registry == nil {
		return nil, fmt.Errorf("referrers of %s: %w", d, errNoOrigin)
	}
	return a.origin.Referrers(ctx, t.Registry, t.Repo, d, artifactType)
}
