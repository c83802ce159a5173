// Package metadata asks peers for what is not a blob's bytes: a manifest by digest (verified
// against it), a blob's size, and the records a peer holds of a tag. Whom to ask is the caller's
// choice, since metadata is taken only from peers the node trusts with it (see the trust rules
// in docs/architecture.md); the bounds on asking are here.
package metadata

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/swarm/penalty"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/internal/tags"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

const (
	// PeerTimeout bounds one peer's answer about a manifest or a size, so that unresponsive
	// peers cannot eat the time the origin fallback needs.
	PeerTimeout = 3 * time.Second
	// MaxManifestPeers bounds the peers asked, one after the other, for a manifest.
	MaxManifestPeers = 8
	// tagTimeout bounds asking peers for a tag while the origin is down; maxTagPeers is how
	// many are asked.
	tagTimeout  = 3 * time.Second
	maxTagPeers = 16
)

// Asker asks peers for metadata.
type Asker struct {
	Transfer  *transfer.Client
	Penalties *penalty.Box
	// Blame is told of a peer that sent a manifest failing its digest.
	Blame func(p peer.ID, d digest.Digest, err error)
}

// BlobSize asks the given peers, in order, for a blob's size (an empty range), and returns the
// first answer. The caller chooses whom to trust with a size: authorized seeds.
func (a *Asker) BlobSize(ctx context.Context, ps []peer.ID, d digest.Digest) (int64, error) {
	lastErr := fmt.Errorf("%s: no peer to ask for its size: %w", d, errdefs.ErrNotFound)
	for _, p := range ps {
		gctx, cancel := context.WithTimeout(ctx, PeerTimeout)
		rng, err := a.Transfer.Get(gctx, p, d, 0, 0)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		_ = rng.Close() // nothing was read: only the size was wanted
		return rng.Size, nil
	}
	return 0, lastErr
}

// Manifest fetches a manifest by digest from the given peers, in order (the first
// MaxManifestPeers, penalized ones left out): whole (manifests are small), verified against its
// digest, with the media type taken from the manifest itself where it says. A peer sending other
// bytes is blamed.
func (a *Asker) Manifest(ctx context.Context, ps []peer.ID, d digest.Digest) (body []byte, mediaType string, err error) {
	lastErr := fmt.Errorf("%s: no peer to ask for it: %w", d, errdefs.ErrNotFound)
	asked := 0
	for _, p := range ps {
		if asked == MaxManifestPeers || ctx.Err() != nil {
			break
		}
		if !a.Penalties.Usable(d, p) {
			continue
		}
		asked++
		body, mt, err := a.manifest(ctx, p, d)
		if err != nil {
			lastErr = err
			continue
		}
		return body, mt, nil
	}
	return nil, "", lastErr
}

func (a *Asker) manifest(ctx context.Context, p peer.ID, d digest.Digest) ([]byte, string, error) {
	gctx, cancel := context.WithTimeout(ctx, PeerTimeout)
	defer cancel()
	rng, err := a.Transfer.Get(gctx, p, d, 0, -1)
	if err != nil {
		return nil, "", err
	}
	defer rng.Close()
	if rng.Size > oci.MaxManifestSize {
		return nil, "", fmt.Errorf("%s from %s: %d bytes: %w", d, p, rng.Size, errdefs.ErrTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(rng, oci.MaxManifestSize+1))
	if err != nil {
		return nil, "", err
	}
	if d.Algorithm().FromBytes(body) != d {
		a.Blame(p, d, errors.New("manifest bytes do not match the digest"))
		return nil, "", fmt.Errorf("%s from %s: %w", d, p, errdefs.ErrDigestMismatch)
	}
	mt := oci.ManifestMediaType(body, rng.MediaType)
	if mt == "" {
		return nil, "", fmt.Errorf("%s from %s: no usable media type: %w", d, p, errdefs.ErrInvalid)
	}
	return body, mt, nil
}

// TagRecords asks peers, at once, what a tag resolved to, for when the origin cannot answer. The
// caller chooses whom to ask: a tag's digest is metadata, taken only from authorized seeds.
// Records from the future are clamped to now; malformed ones are dropped.
func (a *Asker) TagRecords(ctx context.Context, peers []peer.ID, registry, repo, tag string) []tags.Record {
	if len(peers) > maxTagPeers {
		peers = peers[:maxTagPeers]
	}
	ctx, cancel := context.WithTimeout(ctx, tagTimeout)
	defer cancel()
	var mu sync.Mutex
	var out []tags.Record
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs, err := a.Transfer.Tags(ctx, p, registry, repo, tag)
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
				out = append(out, r)
			}
		}()
	}
	wg.Wait()
	return out
}
