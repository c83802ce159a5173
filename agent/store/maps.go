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

// ChunkMap returns the chunk map of committed content for the given chunk size: the recorded one,
// else one computed by reading the content (and recorded, for content committed before maps
// existed). Errors wrap errdefs.ErrNotFound when the content is not committed.
func (s *Store) ChunkMap(ctx context.Context, d digest.Digest, chunkSize int64) (*chunks.Map, error) {
	var raw []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		if bk := tx.Bucket(bucketMaps); bk != nil {
			raw = append([]byte(nil), bk.Get([]byte(d))...)
		}
		return nil
	})
	if len(raw) > 0 {
		var m chunks.Map
		if err := m.UnmarshalBinary(raw); err == nil && m.ChunkSize == chunkSize && m.Digest == d {
			return &m, nil
		}
	}
	f, info, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := chunks.Read(ctx, f, d.Algorithm(), chunkSize)
	if err != nil {
		return nil, fmt.Errorf("store: computing chunk map: %w", err)
	}
	if m.Digest != d || m.Size != info.Size {
		// The file no longer matches its name: never hand out a map for it.
		s.log.Error("committed content does not match its digest", "digest", d, "hashes_to", m.Digest)
		return nil, fmt.Errorf("%s: committed content does not verify: %w", d, errdefs.ErrDigestMismatch)
	}
	if err := s.recordMeta(d, "", m); err != nil {
		s.log.Warn("recording chunk map failed", "digest", d, "err", err)
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
