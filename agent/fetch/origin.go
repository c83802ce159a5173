package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/notfound"
	"github.com/shoal-oci/shoal/internal/throttle"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// ErrNoOrigin is what a fetch from the origin finds when no upstream is configured (a site that
// runs on its seeds alone) or the target has none.
var ErrNoOrigin = fmt.Errorf("no origin registry configured: %w", errdefs.ErrNotFound)

// OriginSource fetches whole blobs from the target's upstream registry: a large one by parallel
// range requests where the registry supports them, else as one stream. A blob the origin said it
// does not have is not asked for again in the same repository for NotFoundTTL.
type OriginSource struct {
	client   *origin.Client
	download *throttle.Limiter
	bytes    prometheus.Counter
	log      *slog.Logger
	notFound *notfound.Cache
}

// DefaultNotFoundTTL is how long an origin's "no such blob" is remembered: long enough that a
// flood of requests for made-up digests costs the origin one request each per interval, short
// enough that a blob pushed just after a miss is found at the next try. maxNotFound bounds the
// memory (the oldest answer is forgotten first).
const (
	DefaultNotFoundTTL = 10 * time.Second
	maxNotFound        = 4096
)

var _ Source = (*OriginSource)(nil)

// NewOriginSource returns the origin as a source. bytes counts what arrives by parallel ranges
// (a stream is counted by the pipeline).
func NewOriginSource(c *origin.Client, download *throttle.Limiter, bytes prometheus.Counter, log *slog.Logger) *OriginSource {
	return &OriginSource{client: c, download: download, bytes: bytes, log: log,
		notFound: notfound.New(DefaultNotFoundTTL, maxNotFound)}
}

// RememberNotFound sets how long a "no such blob" from the origin is remembered (0 or less: not
// at all), for every repository and digest. It returns s.
func (s *OriginSource) RememberNotFound(ttl time.Duration) *OriginSource {
	s.notFound = notfound.New(ttl, maxNotFound)
	return s
}

// Name is "origin".
func (*OriginSource) Name() string { return "origin" }

// FetchBlob opens the blob at the origin from byte off on.
func (s *OriginSource) FetchBlob(ctx context.Context, t Target, d digest.Digest, off, size int64) (io.Closer, int64, error) {
	if t.Registry == nil {
		return nil, 0, ErrNoOrigin
	}
	// A node without credentials of its own for a private repository fetches it with its
	// client's, which the origin accepted (registryapi/origin).
	ctx = credential.NewContext(ctx, t.Access())
	key := notFoundKey(t, d)
	if s.notFound.Has(key) {
		return nil, 0, fmt.Errorf("%s in %s: the origin had no such blob moments ago: %w", d, t.Repo, errdefs.ErrNotFound)
	}
	body, total, err := s.client.GetBlobAt(ctx, t.Registry, t.Repo, d, off, size)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			s.notFound.Add(key)
		}
		return nil, 0, err
	}
	if rf := s.parallel(ctx, t, d, off, total, body); rf != nil {
		return rf, total, nil
	}
	return body, total, nil
}

// notFoundKey names what a remembered 404 answered: the repository, the digest, and the
// credential it was asked with (a registry may answer 404 to a credential that cannot read a
// repository, which must not hide the blob from one that can).
func notFoundKey(t Target, d digest.Digest) string {
	return t.Host() + "/" + t.Repo + "@" + d.String() + " " + t.Credential.Key()
}

// BlobSize asks the origin for the blob's size (a HEAD), answering from the memory of its recent
// "no such blob" as FetchBlob does, and adding to it.
func (s *OriginSource) BlobSize(ctx context.Context, t Target, d digest.Digest) (int64, error) {
	if t.Registry == nil {
		return 0, ErrNoOrigin
	}
	key := notFoundKey(t, d)
	if s.notFound.Has(key) {
		return 0, fmt.Errorf("%s in %s: the origin had no such blob moments ago: %w", d, t.Repo, errdefs.ErrNotFound)
	}
	size, err := s.client.HeadBlob(credential.NewContext(ctx, t.Access()), t.Registry, t.Repo, d)
	if errors.Is(err, errdefs.ErrNotFound) {
		s.notFound.Add(key)
	}
	return size, err
}

// Parallel range requests to the origin: a blob of at least parallelMin bytes is fetched as
// segments of rangeSegment bytes, rangeStreams at a time, landed out of order in the fetch's file
// and hashed in order as the contiguous prefix grows. A registry or object store that caps each
// connection then delivers several times faster. Whether ranges work is probed with the second
// segment's request before any byte is taken; a registry that ignores Range is read as one
// stream.
//
// The first request is a plain GET (most blobs are small, and it learns the size); for a large
// blob that stream is closed after its first segment, so the origin may have sent some more bytes
// that are not used: what was in flight, bounded by the connection's buffers (a few MiB on
// loopback, measured in TestLargeBlobByParallelRanges).
const (
	parallelMin  = 64 << 20
	rangeSegment = 16 << 20
	rangeStreams = 4
)

// rangeFiller is an origin fetch by parallel ranges (a Filler whose bytes the store hashes in
// order, like a stream's).
type rangeFiller struct {
	s    *OriginSource
	t    Target
	d    digest.Digest
	from int64 // first byte fetched
	size int64
	// The first two segments' bodies, opened by the probe.
	first, second io.ReadCloser
}

// parallel returns a rangeFiller for a blob large enough to gain from parallel ranges, taking
// over body (the stream from off), or nil when the stream is to be read as it is.
func (s *OriginSource) parallel(ctx context.Context, t Target, d digest.Digest, off, total int64, body io.ReadCloser) *rangeFiller {
	if total < 0 || total-off < parallelMin {
		return nil
	}
	second, _, err := s.client.GetBlobRange(ctx, t.Registry, t.Repo, d, off+rangeSegment, rangeSegment)
	if err != nil {
		if !errors.Is(err, errdefs.ErrUnsupported) {
			s.log.Debug("range probe failed; one stream", "digest", d, "err", err)
		}
		return nil
	}
	return &rangeFiller{s: s, t: t, d: d, from: off, size: total, first: body, second: second}
}

func (r *rangeFiller) segments() int { return int((r.size - r.from + rangeSegment - 1) / rangeSegment) }

func (r *rangeFiller) segment(i int) (off, n int64) {
	off = r.from + int64(i)*rangeSegment
	return off, min(rangeSegment, r.size-off)
}

// Fill fetches every segment, rangeStreams at a time, and hashes the prefix in order as it
// completes, publishing it.
func (r *rangeFiller) Fill(ctx context.Context, sk Sink) error {
	ctx, cancel := context.WithCancel(credential.NewContext(ctx, r.t.Access()))
	defer cancel()
	// Held chunks past a resumed prefix are fetched again: the ranges land in order from here.
	if err := sk.Absorb(sk.Written()); err != nil {
		return err
	}
	n := r.segments()
	var mu sync.Mutex
	done := make([]bool, n)
	progress := make(chan struct{}, 1)
	next := 2
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= n {
			return 0, false
		}
		next++
		return next - 1, true
	}
	g, gctx := errgroup.WithContext(ctx)
	fetchSeg := func(i int, body io.ReadCloser) error {
		off, size := r.segment(i)
		if body == nil {
			var err error
			if body, _, err = r.s.client.GetBlobRange(gctx, r.t.Registry, r.t.Repo, r.d, off, size); err != nil {
				return err
			}
		}
		defer body.Close()
		src := r.s.download.PriorityReader(gctx, io.LimitReader(body, size))
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		for pos := int64(0); pos < size; {
			k, err := src.Read(*bp)
			if k > 0 {
				if _, werr := sk.WriteAt((*bp)[:k], off+pos); werr != nil {
					return werr
				}
				pos += int64(k)
				r.s.bytes.Add(float64(k))
			}
			if err == io.EOF && pos < size {
				return fmt.Errorf("%s: origin range at %d ended after %d of %d bytes: %w", r.d, off, pos, size, errdefs.ErrUnavailable)
			}
			if err != nil && err != io.EOF {
				return fmt.Errorf("%s: reading origin range at %d: %w", r.d, off, err)
			}
		}
		mu.Lock()
		done[i] = true
		mu.Unlock()
		select {
		case progress <- struct{}{}:
		default:
		}
		return nil
	}
	first, second := r.first, r.second
	r.first, r.second = nil, nil
	for w := range rangeStreams {
		g.Go(func() error {
			switch w {
			case 0:
				if err := fetchSeg(0, first); err != nil {
					return err
				}
			case 1:
				if err := fetchSeg(1, second); err != nil {
					return err
				}
			}
			for {
				i, ok := take()
				if !ok {
					return nil
				}
				if err := fetchSeg(i, nil); err != nil {
					return err
				}
			}
		})
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Wait() }()
	absorbed := 0
	for {
		mu.Lock()
		for absorbed < n && done[absorbed] {
			absorbed++
		}
		upTo := r.size
		if absorbed < n {
			upTo, _ = r.segment(absorbed)
		}
		mu.Unlock()
		if upTo > sk.Written() {
			if err := sk.Absorb(upTo); err != nil {
				cancel()
				<-errc
				return err
			}
			sk.Publish()
		}
		if absorbed == n {
			return <-errc
		}
		select {
		case <-progress:
		case err := <-errc:
			if err != nil {
				return err
			}
			errc <- nil // every segment is in: absorb the rest on the next turn
		case <-ctx.Done():
			<-errc
			return fmt.Errorf("%s: %w", r.d, ctx.Err())
		}
	}
}

// Close releases the probe's bodies if Fill never ran.
func (r *rangeFiller) Close() error {
	var errs []error
	for _, b := range []io.ReadCloser{r.first, r.second} {
		if b != nil {
			errs = append(errs, b.Close())
		}
	}
	return errors.Join(errs...)
}
