package store

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// Blob is committed content open for reading, the one way both the agent and a seed's hosted
// repositories serve stored bytes: to local clients (its methods are registryapi.Blob's) and to
// peers (io.ReaderAt, MediaType: transfer.Blob's). It stays readable while open, even if GC
// removes the content meanwhile.
type Blob struct {
	f      *os.File
	info   Info
	source string
}

// OpenBlob opens committed content as a Blob whose Source is source ("cache", "hosted"), or
// fails with an error wrapping errdefs.ErrNotFound.
func (s *Store) OpenBlob(d digest.Digest, source string) (*Blob, error) {
	f, info, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	return &Blob{f: f, info: info, source: source}, nil
}

// Size is the content's length in bytes.
func (b *Blob) Size() int64 { return b.info.Size }

// MediaType is the media type recorded for a manifest, "" for a blob.
func (b *Blob) MediaType() string { return b.info.MediaType }

// Source says where the bytes are served from.
func (b *Blob) Source() string { return b.source }

// ReadAt reads from the content like os.File.ReadAt.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }

// Close releases the file.
func (b *Blob) Close() error { return b.f.Close() }

// CopyRange writes bytes [off, off+n) to w, n < 0 meaning to the end. A range reaching past the
// end is refused (ErrInvalid) before anything is written; a file shorter than recorded (damaged
// underneath) ends with io.ErrUnexpectedEOF. The section goes to w as an *io.LimitedReader over
// the *os.File, the shape net/http's response passes to the connection's sendfile.
func (b *Blob) CopyRange(_ context.Context, w io.Writer, off, n int64) (int64, error) {
	size := b.info.Size
	if n < 0 {
		n = size - off
	}
	if off < 0 || n < 0 || off+n > size {
		return 0, fmt.Errorf("%s: range %d+%d of %d bytes: %w", b.info.Digest, off, n, size, errdefs.ErrInvalid)
	}
	if _, err := b.f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	written, err := io.Copy(w, &io.LimitedReader{R: b.f, N: n})
	if err == nil && written != n {
		err = io.ErrUnexpectedEOF
	}
	return written, err
}

// Digest names the content.
func (b *Blob) Digest() digest.Digest { return b.info.Digest }
