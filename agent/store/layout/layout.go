// Package layout names a node's data directory: where the store keeps committed and partial
// content, its metadata database and the buckets in it. The layout is a format that outlives a
// version; the store, the records kept beside its content (agent/store/records) and the tools that
// read a directory while no node has it open (`shoal store verify`, agent/store/verify) all
// name it from here.
//
//	blobs/<algorithm>/<encoded>   committed content, never modified after the rename
//	partial/<algorithm>-<hex>     blobs of known size being fetched, kept across restarts
//	tmp/                          content being written; cleared at start
//	meta.db                       bbolt: media types, tag resolutions, chunk maps of committed
//	                              content, maps of partial files, and pins
package layout

import (
	"path/filepath"

	"github.com/opencontainers/go-digest"
)

// The store's own code names the same directories, file and buckets (agent/store's
// layout_test.go holds them together).
const (
	// BlobsDir holds committed content, one file per digest: BlobsDir/<algorithm>/<encoded>.
	BlobsDir = "blobs"
	// PartialDir holds blobs of known size being fetched: PartialDir/<algorithm>-<encoded>.
	PartialDir = "partial"
	// TmpDir holds other content being written; it is cleared when a Store opens.
	TmpDir = "tmp"
	// MetaFile is the bbolt database of metadata. Its file lock is the data directory's: a
	// Store holds it exclusively for as long as it is open.
	MetaFile = "meta.db"

	// MediaBucket maps a digest to the media type of a committed manifest.
	MediaBucket = "media"
	// MapsBucket maps a digest to the chunk map (chunks.Map's binary form) of committed content.
	MapsBucket = "chunkmaps"
	// PartialBucket maps a digest to the chunk map its partial file's chunks verify against.
	PartialBucket = "partial"
	// PinsBucket maps a pin's key to its JSON record, whose "digests" are what it keeps.
	PinsBucket = "pins"
	// TagsBucket maps a tag record's key (tags.Key) to its JSON form (tags.Record).
	TagsBucket = "tags"
)

// BlobPath is where committed content d lives under the data directory dir; d must be valid.
func BlobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, BlobsDir, string(d.Algorithm()), d.Encoded())
}

// PartialPath is where a partial file of d lives under the data directory dir; d must be valid.
func PartialPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, PartialDir, d.Algorithm().String()+"-"+d.Encoded())
}
