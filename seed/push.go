package seed

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/internal/reference"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/seed/hosted"
)

// pinningPusher is the seed's push API: the hosted registry, plus a pin for every pushed tag so
// that --replicas copies the image to other seeds, and unpinning when a tag or manifest is
// deleted so that repair does not bring it back.
type pinningPusher struct {
	*hosted.Registry
	s *Seed
}

var _ registryapi.Pusher = (*pinningPusher)(nil)

// frontend is a seed's /v2 Backend. A request in the hosted namespace (its ns names the hosted
// registry, or it has no ns: what crane, skopeo and oras push to a seed carries none) is answered
// by the hosted repositories when this seed holds the repository, else by the agent, which finds
// other seeds' pushes in the cluster. Every other ns goes to the agent's upstream path and never
// to the hosted repositories, so a pushed repository cannot shadow an upstream one of the same
// name.
type frontend struct {
	hosted *hosted.Registry
	agent  *agent.Agent
}

var _ registryapi.Backend = (*frontend)(nil)

// inHosted reports whether r is in the hosted namespace.
func (f *frontend) inHosted(r registryapi.Repository) bool {
	return r.Registry == "" || f.agent.IsHosted(r.Registry)
}

// pick is the backend of r, and r as that backend should see it: the agent is told the hosted
// registry's name, since to it no ns means its first upstream.
func (f *frontend) pick(r registryapi.Repository) (registryapi.Backend, registryapi.Repository) {
	if !f.inHosted(r) {
		return f.agent, r
	}
	if f.hosted.Hosts(r.Name) {
		return f.hosted, r
	}
	return f.agent, registryapi.Repository{Registry: f.agent.HostedRegistry(), Name: r.Name}
}

// pickListing is the backend of tag lists and referrers: the hosted registry for the hosted
// namespace (the agent has no origin to list), the agent for the rest.
func (f *frontend) pickListing(r registryapi.Repository) registryapi.Backend {
	if f.inHosted(r) {
		return f.hosted
	}
	return f.agent
}

func (f *frontend) OpenBlob(ctx context.Context, r registryapi.Repository, d digest.Digest) (registryapi.Blob, error) {
	b, r := f.pick(r)
	return b.OpenBlob(ctx, r, d)
}

func (f *frontend) StatBlob(ctx context.Context, r registryapi.Repository, d digest.Digest) (int64, error) {
	b, r := f.pick(r)
	return b.StatBlob(ctx, r, d)
}

func (f *frontend) GetManifest(ctx context.Context, r registryapi.Repository, ref string, accept []string) (*registryapi.Manifest, error) {
	b, r := f.pick(r)
	return b.GetManifest(ctx, r, ref, accept)
}

func (f *frontend) Tags(ctx context.Context, r registryapi.Repository, n int, last string) (*registryapi.Listing, error) {
	return f.pickListing(r).Tags(ctx, r, n, last)
}

func (f *frontend) Referrers(ctx context.Context, r registryapi.Repository, d digest.Digest, artifactType string) (*registryapi.Listing, error) {
	return f.pickListing(r).Referrers(ctx, r, d, artifactType)
}

// pinTimeout bounds recording the pin of a pushed tag (a walk of content already in the store).
const pinTimeout = time.Minute

func (p *pinningPusher) PutManifest(ctx context.Context, repo string, tags []string, m *registryapi.Manifest) error {
	if err := p.Registry.PutManifest(ctx, repo, tags, m); err != nil {
		return err
	}
	// The pushed content is kept by the hosted index already; the pin is for replication, and is
	// recorded in the background so that a push is not slowed by it.
	for _, tag := range tags {
		p.s.rep.spawn(func() { p.s.pinPushed(repo, tag, m.Digest) })
	}
	return nil
}

// pinPushed records the pin of a pushed tag, created at the push: a replica's or an older push's
// pin does not replace a newer one.
func (s *Seed) pinPushed(repo, tag string, d digest.Digest) {
	ctx, cancel := s.rep.life.Context(pinTimeout)
	defer cancel()
	cur, _, pushed, ok := s.hosted.ResolveTag(repo, tag)
	if !ok || cur != d {
		return // pushed over or deleted meanwhile; that push records its own pin
	}
	// Every platform, from the store: a pushed image is all here.
	all := pins.PreheatRequest{AllPlatforms: true}
	pin, err := s.pins.FetchImage(ctx, fetch.Target{Repo: repo}, reference.Ref{Repo: repo, Digest: d}, nil, all, func(pins.Progress) {})
	if err != nil {
		s.log.Warn("recording the pin of a pushed tag failed", "repo", repo, "tag", tag, "digest", d, "err", err)
		return
	}
	pin.Hosted, pin.Ref, pin.Tag, pin.Replicas, pin.Created = true, repo+":"+tag, tag, s.pins.DefaultReplicas(), pushed
	if _, err := s.pins.Put(pin); err != nil {
		s.log.Error("recording the pin of a pushed tag failed", "repo", repo, "tag", tag, "err", err)
	}
}

func (p *pinningPusher) DeleteTag(ctx context.Context, repo, tag string) error {
	if err := p.Registry.DeleteTag(ctx, repo, tag); err != nil {
		return err
	}
	_, err := p.s.pins.Remove(ctx, repo+":"+tag)
	return err
}

func (p *pinningPusher) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	if err := p.Registry.DeleteManifest(ctx, repo, d); err != nil {
		return err
	}
	all, err := p.s.pins.List()
	if err != nil {
		p.s.log.Warn("listing pins to drop those of a deleted manifest", "err", err)
		return nil
	}
	for _, pin := range all {
		if pin.Hosted && pin.Repo == repo && pin.Digest == d {
			if _, err := p.s.pins.Remove(ctx, pin.Ref); err != nil {
				p.s.log.Warn("unpinning a deleted manifest failed", "pin", pin.Ref, "err", err)
			}
		}
	}
	return nil
}
