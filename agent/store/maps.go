package store

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
)

var bucketMaps = []byte("chunkmaps")

// maxMapComputations bounds how many chunk maps are computed at once (each a full read of a
// blob); more wait for a slot, as long as their context allows.
const maxMapComputations = 4

// ChunkMap returns the chunk map of committed content for the given chunk size: the recorded one,
// else one computed by reading the content. A map in the store's own chunk size is recorded, so
// content is read for it at most once (content committed before maps existed, a pushed blob named
// in another algorithm than it was hashed in); concurrent requests for one map share one read.
// Errors wrap errdefs.ErrNotFound when the content is not committed.
func (s *Store) ChunkMap(ctx context.Context, d digest.Digest, chunkSize int64) (*chunks.Map, error) {
	if m := s.recordedMap(d, chunkSize); m != nil {
		return m, nil
	}
	ch := s.maps.DoChan(fmt.Sprintf("%s/%d", d, chunkSize), func() (any, error) {
		if m := s.recordedMap(d, chunkSize); m != nil {
			return m, nil // recorded by a computation that ended meanwhile
		}
		return s.computeMap(ctx, d, chunkSize)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*chunks.Map), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("store: chunk map of %s: %w", d, ctx.Err())
	}
}

// recordedMap returns d's recorded map if it is in chunkSize, else nil.
func (s *Store) recordedMap(d digest.Digest, chunkSize int64) *chunks.Map {
	var raw []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		if bk := tx.Bucket(bucketMaps); bk != nil {
			raw = append([]byte(nil), bk.Get([]byte(d))...)
		}
		return nil
	})
	if len(raw) == 0 {
		return nil
	}
	var m chunks.Map
	if err := m.UnmarshalBinary(raw); err != nil || m.ChunkSize != chunkSize || m.Digest != d {
		return nil
	}
	return &m
}

// computeMap reads committed content d for its map, in one of maxMapComputations slots, and
// records it when it is in the store's chunk size.
func (s *Store) computeMap(ctx context.Context, d digest.Digest, chunkSize int64) (*chunks.Map, error) {
	f, info, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if chunks.Count(info.Size, chunkSize) > chunks.MaxChunks {
		// Too large for a map: said without a slot or a read (over 128 GiB at 512 KiB).
		return nil, fmt.Errorf("store: %s: %d bytes is more than %d chunks of %d: %w", d, info.Size, chunks.MaxChunks, chunkSize, errdefs.ErrTooLarge)
	}
	select {
	case s.mapSlots <- struct{}{}:
		defer func() { <-s.mapSlots }()
	case <-ctx.Done():
		return nil, fmt.Errorf("store: chunk map of %s: %w", d, ctx.Err())
	}
	m, err := chunks.Read(ctx, f, d.Algorithm(), chunkSize)
	if err != nil {
		return nil, fmt.Errorf("store: computing chunk map: %w", err)
	}
	if m.Digest != d || m.Size != info.Size {
		// The file no longer matches its name: never hand out a map for it.
		s.log.Error("committed content does not match its digest", "digest", d, "hashes_to", m.Digest)
		return nil, fmt.Errorf("%s: committed content does not verify: %w", d, errdefs.ErrDigestMismatch)
	}
	// Only the store's own chunk size is recorded: one map per blob, and the one peers ask for.
	if chunkSize == s.chunkSize {
		if err := s.recordMeta(d, "", m); err != nil {
			s.log.Warn("recording chunk map failed", "digest", d, "err", err)
		}
	}
	return m, nil
}

func (s *Store) deleteChunkMap(d digest.Digest) {
	_ = s.db.Update(func(tx *bolt.Tx) error {
		if bk := tx.Bucket(bucketMaps); bk != nil {
			return bk.Delete([]byte(d))
		}
		return nil
	})
}
