package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
)

// pushJobs bounds the blobs of one image or index uploaded at once, as docker push does (3) and
// crane's default (4).
const pushJobs = 4

// push copies an image or index to ref: first every blob, each hashed while it streams, then the
// manifests, children before the index that names them. A blob whose bytes do not match its
// digest fails the push before any manifest goes up, so the registry never holds the image.
func push(ctx context.Context, ref name.Reference, t remote.Taggable, ropts []remote.Option, progress func(Progress)) error {
	blobs, err := blobsOf(t, map[v1.Hash]bool{})
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	p := Progress{Ref: refString(ref), BlobsTotal: len(blobs)}
	for _, b := range blobs {
		p.BytesTotal += b.size
	}
	var mu sync.Mutex
	// The first failed blob cancels the others: the image will not be pushed anyway.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(pushJobs)
	blobOpts := append(slices.Clip(ropts), remote.WithContext(gctx))
	for _, b := range blobs {
		g.Go(func() error {
			if err := remote.WriteLayer(ref.Context(), verifiedLayer{b.Layer}, blobOpts...); err != nil {
				return fmt.Errorf("push blob %s to %s: %w", b.digest, ref.Context(), err)
			}
			mu.Lock()
			defer mu.Unlock()
			p.Blobs++
			p.Bytes += b.size
			if progress != nil {
				progress(p)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Every blob is there now, so ggcr's own blob checks find them and only manifests move.
	switch t := t.(type) {
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, t, ropts...)
	case v1.Image:
		err = remote.Write(ref, t, ropts...)
	default:
		err = fmt.Errorf("%T is neither an image nor an index: %w", t, errdefs.ErrUnsupported)
	}
	if err != nil {
		return fmt.Errorf("push manifest %s: %w", ref, err)
	}
	return nil
}

type blob struct {
	v1.Layer
	digest v1.Hash
	size   int64
}

// blobsOf lists the distributable blobs (configs and layers) under t once each; seen carries the
// digests already listed across the children of an index.
func blobsOf(t remote.Taggable, seen map[v1.Hash]bool) ([]blob, error) {
	var out []blob
	add := func(l v1.Layer) error {
		mt, err := l.MediaType()
		if err != nil {
			return err
		}
		if !mt.IsDistributable() {
			return nil // foreign layers stay where their URLs point, as ggcr's remote.Write does
		}
		d, err := l.Digest()
		if err != nil {
			return err
		}
		if seen[d] {
			return nil
		}
		seen[d] = true
		size, err := l.Size()
		if err != nil {
			return err
		}
		out = append(out, blob{Layer: l, digest: d, size: size})
		return nil
	}
	switch t := t.(type) {
	case v1.ImageIndex:
		im, err := t.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, d := range im.Manifests {
			var child remote.Taggable
			switch {
			case d.MediaType.IsIndex():
				child, err = t.ImageIndex(d.Digest)
			case d.MediaType.IsImage():
				child, err = t.Image(d.Digest)
			default:
				continue // not something ggcr's WriteIndex pushes either
			}
			if err != nil {
				return nil, fmt.Errorf("manifest %s: %w", d.Digest, err)
			}
			bs, err := blobsOf(child, seen)
			if err != nil {
				return nil, err
			}
			out = append(out, bs...)
		}
	case v1.Image:
		cfg, err := partial.ConfigLayer(t)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := add(cfg); err != nil {
			return nil, err
		}
		layers, err := t.Layers()
		if err != nil {
			return nil, err
		}
		for _, l := range layers {
			if err := add(l); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// verifyManifests checks that the manifest of t, and of each child of an index, hashes to the
// digest its parent (or the layout's index.json) names, before anything is pushed: the registry
// would otherwise store a manifest under a digest other than the one the archive claimed.
func verifyManifests(t remote.Taggable, want v1.Descriptor) error {
	if want.Size > oci.MaxManifestSize {
		return fmt.Errorf("manifest %s: %d bytes, over the %d-byte limit: %w", want.Digest, want.Size, oci.MaxManifestSize, errdefs.ErrTooLarge)
	}
	raw, err := t.RawManifest()
	if err != nil {
		return fmt.Errorf("manifest %s: %w", want.Digest, err)
	}
	got, n, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	if got != want.Digest || n != want.Size {
		return fmt.Errorf("manifest %s (%d bytes) holds %d bytes hashing to %s: %w", want.Digest, want.Size, n, got, errdefs.ErrDigestMismatch)
	}
	idx, ok := t.(v1.ImageIndex)
	if !ok {
		return nil
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		var child remote.Taggable
		switch {
		case d.MediaType.IsIndex():
			child, err = idx.ImageIndex(d.Digest)
		case d.MediaType.IsImage():
			child, err = idx.Image(d.Digest)
		default:
			continue
		}
		if err != nil {
			return fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
		if err := verifyManifests(child, d); err != nil {
			return err
		}
	}
	return nil
}

// verifiedLayer hashes its compressed bytes as they are read, so a blob whose file does not match
// its digest fails its upload instead of being committed (house rule: never trust bytes you did
// not hash).
type verifiedLayer struct{ v1.Layer }

func (l verifiedLayer) Compressed() (io.ReadCloser, error) {
	d, err := l.Digest()
	if err != nil {
		return nil, err
	}
	size, err := l.Size()
	if err != nil {
		return nil, err
	}
	if d.Algorithm != "sha256" {
		return nil, fmt.Errorf("blob %s: only sha256 digests are supported: %w", d, errdefs.ErrUnsupported)
	}
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	return &verifyReader{rc: rc, h: sha256.New(), want: d, size: size}, nil
}

type verifyReader struct {
	rc   io.ReadCloser
	h    hash.Hash
	want v1.Hash
	size int64
	n    int64
}

func (r *verifyReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if r.n > r.size {
		return n, fmt.Errorf("blob %s: more than its %d bytes: %w", r.want, r.size, errdefs.ErrDigestMismatch)
	}
	if err == io.EOF {
		if got := hex.EncodeToString(r.h.Sum(nil)); r.n != r.size || got != r.want.Hex {
			return n, fmt.Errorf("blob %s (%d bytes) holds %d bytes hashing to sha256:%s: %w", r.want, r.size, r.n, got, errdefs.ErrDigestMismatch)
		}
	}
	return n, err
}

func (r *verifyReader) Close() error { return r.rc.Close() }
