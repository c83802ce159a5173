// Package hosted keeps the repositories pushed to a seed: it takes pushes through the registry
// API (it is a registryapi.Pusher) and serves them (it is a registryapi.Backend for hosted
// repositories only; a repository it does not host is not found). A seed's frontend routes
// requests in the hosted namespace to it and every other to the agent, which mirrors upstreams,
// so one seed serves both without either answering for the other.
//
// The registry knows repositories by path alone: which requests are in the hosted namespace (the
// ns that names it) is decided before they reach it.
//
// Content bytes live in the node's content store (agent/store), where the agent serves them to
// peers; pushed blobs are committed there only after their digest verifies. The repository index
// (tags, which manifests and blobs each repository holds, referrers by subject) is a bbolt file
// beside the store, hosted.db, updated in single transactions so that a crash leaves it either
// before or after each change. Upload sessions live in memory and in files under the store's
// tmp/ directory: a restart forgets them (and the store clears tmp/), and a session left idle
// for the upload timeout is removed by Run.
package hosted

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/registryapi"
)

// Defaults of the options.
const (
	DefaultUploadTimeout = time.Hour
	DefaultMaxBlobSize   = 64 << 30
	DefaultMaxUploads    = 1024
)

// Registry is the set of hosted repositories of a seed. It is safe for concurrent use.
type Registry struct {
	st  *store.Store
	db  *bolt.DB
	log *slog.Logger

	onCommit      func(digest.Digest)
	deletes       bool
	uploadTimeout time.Duration
	maxBlobSize   int64
	maxUploads    int

	mu      sync.Mutex
	uploads map[string]*upload
	// pending counts content being committed and not yet in the index, which Referenced must
	// keep from GC in between.
	pending map[digest.Digest]int
	closed  bool
}

var (
	_ registryapi.Pusher  = (*Registry)(nil)
	_ registryapi.Backend = (*Registry)(nil)
)

// Option configures a Registry.
type Option func(*Registry)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(r *Registry) { r.log = l } }

// WithCommitHook calls fn with the digest of each piece of content (blob or manifest) after it
// is committed to the store, so the seed can announce it to its peers. fn must not block long.
func WithCommitHook(fn func(digest.Digest)) Option { return func(r *Registry) { r.onCommit = fn } }

// WithDeletes enables or disables the delete API (manifests, tags, blobs). Deletes are enabled
// by default: a seed is the registry of what is pushed to it, and its owners clean it up.
func WithDeletes(enabled bool) Option { return func(r *Registry) { r.deletes = enabled } }

// WithUploadTimeout sets how long an upload session may stay idle before Run removes it and its
// bytes (default DefaultUploadTimeout).
func WithUploadTimeout(d time.Duration) Option { return func(r *Registry) { r.uploadTimeout = d } }

// WithMaxBlobSize caps a single pushed blob (default DefaultMaxBlobSize, 64 GiB).
func WithMaxBlobSize(n int64) Option { return func(r *Registry) { r.maxBlobSize = n } }

// WithMaxUploads caps the upload sessions open at once (default DefaultMaxUploads); each holds
// an open file.
func WithMaxUploads(n int) Option { return func(r *Registry) { r.maxUploads = n } }

// New opens the hosted repositories of the store st, whose data directory also holds their index
// (hosted.db). The caller keeps owning st and closes it after the Registry.
func New(st *store.Store, opts ...Option) (*Registry, error) {
	r := &Registry{
		st:            st,
		log:           slog.New(slog.DiscardHandler),
		deletes:       true,
		uploadTimeout: DefaultUploadTimeout,
		maxBlobSize:   DefaultMaxBlobSize,
		maxUploads:    DefaultMaxUploads,
		uploads:       map[string]*upload{},
		pending:       map[digest.Digest]int{},
	}
	for _, o := range opts {
		o(r)
	}
	switch {
	case st == nil:
		return nil, errors.New("hosted: no content store")
	case r.uploadTimeout <= 0:
		return nil, fmt.Errorf("hosted: upload timeout %v is not positive", r.uploadTimeout)
	case r.maxBlobSize <= 0:
		return nil, fmt.Errorf("hosted: blob size limit %d is not positive", r.maxBlobSize)
	case r.maxUploads <= 0:
		return nil, fmt.Errorf("hosted: upload limit %d is not positive", r.maxUploads)
	}
	db, err := bolt.Open(filepath.Join(st.Dir(), "hosted.db"), 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("hosted: %s is in use by another process", st.Dir())
		}
		return nil, fmt.Errorf("hosted: opening the index: %w", err)
	}
	if err := db.Update(createBuckets); err != nil {
		db.Close()
		return nil, fmt.Errorf("hosted: %w", err)
	}
	r.db = db
	return r, nil
}

// Close ends every upload session, removing its bytes, and closes the index. Content already
// committed stays in the store.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	ups := r.uploads
	r.uploads = map[string]*upload{}
	r.mu.Unlock()
	for _, u := range ups {
		u.end()
	}
	return r.db.Close()
}

// Run removes upload sessions idle for longer than the upload timeout, with their bytes, until
// ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	every := min(max(r.uploadTimeout/4, 10*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			r.expire(now)
		}
	}
}

// committed tells the hook about new content.
func (r *Registry) committed(d digest.Digest) {
	if r.onCommit != nil {
		r.onCommit(d)
	}
}

// hold marks d as being committed, for Referenced; the returned func releases it.
func (r *Registry) hold(d digest.Digest) func() {
	r.mu.Lock()
	r.pending[d]++
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		if r.pending[d]--; r.pending[d] <= 0 {
			delete(r.pending, d)
		}
		r.mu.Unlock()
	}
}
