package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/descriptors"
	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/swarm"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/p2p"
)

// sizer binds blob sizes (fetch.Sizer) from metadata the node trusts, in order of cost: its own
// records of the manifests it verified, the origin's HEAD, then the seeds (authorized by the
// operator), asked only when the origin cannot answer or the target has none. Ordinary peers
// are never asked: a size they claim would become a client's Content-Length and a reservation
// in the store.
type sizer struct {
	records *descriptors.Index
	origin  *fetch.OriginSource
	node    *p2p.Node     // nil without peers
	swarm   *swarm.Client // nil without peers
}

var _ fetch.Sizer = (*sizer)(nil)

// seedSizeTimeout bounds asking the seeds for a size.
const seedSizeTimeout = 5 * time.Second

// maxSizeSeeds bounds the seeds asked for one size.
const maxSizeSeeds = 4

// BlobSize implements fetch.Sizer.
func (s *sizer) BlobSize(ctx context.Context, t fetch.Target, d digest.Digest) (int64, error) {
	if size, ok := s.records.Size(d); ok {
		return size, nil
	}
	err := fmt.Errorf("%s: %w", d, fetch.ErrNoOrigin)
	if t.Registry != nil {
		var size int64
		size, err = s.origin.BlobSize(ctx, t, d)
		switch {
		case err == nil && size >= 0:
			return size, nil
		case err == nil:
			err = fmt.Errorf("%s: the origin did not say its size: %w", d, errdefs.ErrUnavailable)
		case errors.Is(err, errdefs.ErrNotFound), errors.Is(err, errdefs.ErrDenied):
			return 0, err // the origin's answer for this repository stands
		}
	}
	if size, serr := s.fromSeeds(ctx, d); serr == nil {
		return size, nil
	}
	return 0, err
}

// fromSeeds asks the live seeds other than this node for d's size.
func (s *sizer) fromSeeds(ctx context.Context, d digest.Digest) (int64, error) {
	if s.node == nil {
		return 0, fmt.Errorf("%s: no seeds: %w", d, errdefs.ErrNotFound)
	}
	ctx, cancel := context.WithTimeout(ctx, seedSizeTimeout)
	defer cancel()
	var seeds []peer.ID
	for _, p := range s.node.Seeds(ctx) {
		if p != s.node.ID() && len(seeds) < maxSizeSeeds {
			seeds = append(seeds, p)
		}
	}
	return s.swarm.BlobSizeFrom(ctx, seeds, d)
}
