package transfer

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/tags"
)

// MemoryContent is an in-memory Content for tests and tools. It serves exactly what it was
// given, so tests can also make it lie: Put bytes under a digest they do not hash to.
type MemoryContent struct {
	mu    sync.Mutex
	blobs map[digest.Digest]memBlob
	maps  map[digest.Digest]*chunks.Map
	tags  map[string][]tags.Record
}

type memBlob struct {
	data      []byte
	mediaType string
}

// NewMemoryContent returns an empty MemoryContent.
func NewMemoryContent() *MemoryContent {
	return &MemoryContent{blobs: map[digest.Digest]memBlob{}, maps: map[digest.Digest]*chunks.Map{}, tags: map[string][]tags.Record{}}
}

// Put stores data under d, unchecked.
func (m *MemoryContent) Put(d digest.Digest, mediaType string, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobs[d] = memBlob{data: data, mediaType: mediaType}
}

// PutMap serves cm as the map of its digest instead of computing one.
func (m *MemoryContent) PutMap(cm *chunks.Map) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maps[cm.Digest] = cm
}

// PutTag adds a tag record.
func (m *MemoryContent) PutTag(registry, repo, tag string, rec tags.Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := registry + "/" + repo + ":" + tag
	m.tags[k] = append(m.tags[k], rec)
}

// OpenContent implements Content.
func (m *MemoryContent) OpenContent(d digest.Digest) (Blob, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return nil, fmt.Errorf("%s: %w", d, errdefs.ErrNotFound)
	}
	return &memReader{Reader: bytes.NewReader(b.data), mediaType: b.mediaType}, nil
}

// ChunkMap implements Content: the map put with PutMap, else one computed from the bytes held
// (which, for lying content, is a consistent forgery).
func (m *MemoryContent) ChunkMap(_ context.Context, d digest.Digest, chunkSize int64) (*chunks.Map, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cm, ok := m.maps[d]; ok && cm.ChunkSize == chunkSize {
		return cm, nil
	}
	b, ok := m.blobs[d]
	if !ok {
		return nil, fmt.Errorf("%s: %w", d, errdefs.ErrNotFound)
	}
	bld, err := chunks.NewBuilder(d.Algorithm(), chunkSize)
	if err != nil {
		return nil, err
	}
	bld.Write(b.data)
	cm := bld.Map()
	if cm == nil {
		return nil, fmt.Errorf("%s: too large for a chunk map: %w", d, errdefs.ErrTooLarge)
	}
	cm.Digest = d
	return cm, nil
}

// TagRecords implements Content.
func (m *MemoryContent) TagRecords(registry, repo, tag string) ([]tags.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]tags.Record(nil), m.tags[registry+"/"+repo+":"+tag]...), nil
}

type memReader struct {
	*bytes.Reader
	mediaType string
}

func (r *memReader) Close() error      { return nil }
func (r *memReader) MediaType() string { return r.mediaType }
