package seed

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

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

var (
	_ registryapi.Pusher  = (*pinningPusher)(nil)
	_ registryapi.Backend = (*pinningPusher)(nil)
)

// pinTimeout bounds recording the pin of a pushed tag (a walk of content already in the store).
const pinTimeout = time.Minute

func (p *pinningPusher) PutManifest(ctx context.Context, repo string, tags []string, m *registryapi.Manifest) error {
	if err := p.Registry.PutManifest(ctx, repo, tags, m); err != nil {
		return err
	}
	// The pushed content is kept by the hosted index already; the pin is for replication, and is
	// recorded in the background so that a push is not slowed by it.
	for _, tag := range tags {
		p.s.pins.spawn(func() { p.s.pinPushed(repo, tag, m.Digest) })
	}
	return nil
}

// pinPushed records the pin of a pushed tag, created at the push: a replica's or an older push's
// pin does not replace a newer one.
func (s *Seed) pinPushed(repo, tag string, d digest.Digest) {
	ctx, cancel := context.WithTimeout(s.pins.ctx, pinTimeout)
	defer cancel()
	cur, _, pushed, ok := s.hosted.ResolveTag(repo, tag)
	if !ok || cur != d {
		return // pushed over or deleted meanwhile; that push records its own pin
	}
	// Every platform, from the store: a pushed image is all here.
	all := PreheatRequest{AllPlatforms: true}
	pin, err := fetchImage(ctx, s.a, registryapi.Target{Repo: repo}, Ref{Repo: repo, Digest: d}, nil, all, func(Progress) {})
	if err != nil {
		s.log.Warn("recording the pin of a pushed tag failed", "repo", repo, "tag", tag, "digest", d, "err", err)
		return
	}
	pin.Hosted, pin.Ref, pin.Tag, pin.Replicas, pin.Created = true, repo+":"+tag, tag, s.pins.replicas, pushed
	if _, err := s.a.Store().PutPin(pin); err != nil {
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
	pins, err := p.s.pins.List()
	if err != nil {
		return nil
	}
	for _, pin := range pins {
		if pin.Hosted && pin.Repo == repo && pin.Digest == d {
			_, _ = p.s.pins.Remove(ctx, pin.Ref)
		}
	}
	return nil
}
