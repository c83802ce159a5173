package seed

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
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
		p.s.wg.Add(1)
		go func() {
			defer p.s.wg.Done()
			p.s.pinPushed(repo, tag, m.Digest)
		}()
	}
	return nil
}

// pinPushed records the pin of a pushed tag, unless the tag has moved on meanwhile.
func (s *Seed) pinPushed(repo, tag string, d digest.Digest) {
	ctx, cancel := context.WithTimeout(s.lifetime, pinTimeout)
	defer cancel()
	ref := Ref{Repo: repo, Tag: tag}
	pin, err := walkStored(ctx, s, Ref{Repo: repo, Digest: d})
	if err != nil {
		s.log.Warn("recording the pin of a pushed tag failed", "ref", ref.String(), "digest", d, "err", err)
		return
	}
	if cur, _, _, ok := s.hosted.ResolveTag(repo, tag); !ok || cur != d {
		return // pushed over or deleted meanwhile
	}
	pin.Ref, pin.Tag, pin.Replicas = ref.String(), tag, s.pins.replicas
	if err := s.a.Store().PutPin(pin); err != nil {
		s.log.Error("recording the pin of a pushed tag failed", "ref", ref.String(), "err", err)
	}
}

// walkStored builds the pin record of an image whose content is all in the store (pushed): every
// platform, no fetching beyond the store.
func walkStored(ctx context.Context, s *Seed, ref Ref) (store.Pin, error) {
	return Preheat(ctx, s.a, PreheatRequest{Ref: ref.String(), AllPlatforms: true}, func(Progress) {})
}

func (p *pinningPusher) DeleteTag(ctx context.Context, repo, tag string) error {
	if err := p.Registry.DeleteTag(ctx, repo, tag); err != nil {
		return err
	}
	_, err := p.s.pins.Remove(ctx, Ref{Repo: repo, Tag: tag}.String())
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
		if pin.Registry == "" && pin.Repo == repo && pin.Digest == d {
			_, _ = p.s.pins.Remove(ctx, pin.Ref)
		}
	}
	return nil
}
