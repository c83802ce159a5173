package hosted

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/agent/store/ingest"
	"github.com/shoal-oci/shoal/internal/diskio"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/registryapi"
)

// upload is one upload session: its bytes so far in a store ingest, whose running hash carries
// over from one request to the next.
type upload struct {
	id, repo string
	in       *ingest.Ingest
	// turn serializes the requests on the session, whose bytes arrive in order: a request holds
	// its one token. A channel rather than a mutex, so a request waiting behind a slow one gives
	// up when its client does.
	turn  chan struct{}
	ended atomic.Bool
	// busy counts requests using the session and last is when the latest ended, both guarded by
	// Registry.mu: expiry skips busy sessions.
	busy int
	last time.Time
}

// end closes the session and removes its bytes. It may race with a request writing to it,
// which then fails.
func (u *upload) end() {
	u.ended.Store(true)
	_ = u.in.Close()
}

// copyBufferSize is the size of the writes a chunk is copied with: large enough that a push
// costs few system calls.
const copyBufferSize = 256 << 10

// StartUpload opens a session in repo, hashing with alg (sha256 when empty or unavailable).
func (r *Registry) StartUpload(_ context.Context, repo string, alg digest.Algorithm) (string, error) {
	if alg == "" || !alg.Available() {
		alg = digest.SHA256
	}
	r.mu.Lock()
	full, closed := len(r.uploads) >= r.maxUploads, r.closed
	r.mu.Unlock()
	switch {
	case closed:
		return "", fmt.Errorf("hosted: closed: %w", errdefs.ErrUnavailable)
	case full:
		return "", fmt.Errorf("hosted: %d uploads open: %w", r.maxUploads, errdefs.ErrTooManyRequests)
	}
	in, err := ingest.New(r.st, alg)
	if err != nil {
		return "", err
	}
	u := &upload{id: rand.Text(), repo: repo, in: in, last: time.Now(), turn: make(chan struct{}, 1)}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		u.end()
		return "", fmt.Errorf("hosted: closed: %w", errdefs.ErrUnavailable)
	}
	r.uploads[u.id] = u
	r.mu.Unlock()
	r.log.Debug("upload started", "repo", repo, "upload", u.id)
	return u.id, nil
}

// acquire finds the session and waits for the requests before this one (or for ctx to end);
// release follows.
func (r *Registry) acquire(ctx context.Context, repo, id string) (*upload, error) {
	r.mu.Lock()
	u := r.uploads[id]
	if u == nil || u.repo != repo {
		r.mu.Unlock()
		return nil, fmt.Errorf("upload %s of %s: %w", id, repo, registryapi.ErrUploadUnknown)
	}
	u.busy++
	r.mu.Unlock()
	select {
	case u.turn <- struct{}{}:
	case <-ctx.Done():
		r.mu.Lock()
		u.busy--
		r.mu.Unlock()
		return nil, fmt.Errorf("upload %s of %s: %w", id, repo, ctx.Err())
	}
	if u.ended.Load() {
		r.release(u)
		return nil, fmt.Errorf("upload %s of %s: %w", id, repo, registryapi.ErrUploadUnknown)
	}
	return u, nil
}

func (r *Registry) release(u *upload) {
	<-u.turn
	r.mu.Lock()
	u.busy--
	u.last = time.Now()
	r.mu.Unlock()
}

// remove ends a session a request holds.
func (r *Registry) remove(u *upload) {
	r.mu.Lock()
	if r.uploads[u.id] == u {
		delete(r.uploads, u.id)
	}
	r.mu.Unlock()
	u.end()
}

// WriteUpload appends body to the session. The blob size limit bounds what it reads: beyond it
// the session ends with an error wrapping errdefs.ErrTooLarge.
func (r *Registry) WriteUpload(ctx context.Context, repo, id string, off int64, body io.Reader) (int64, error) {
	u, err := r.acquire(ctx, repo, id)
	if err != nil {
		return 0, err
	}
	defer r.release(u)
	size := u.in.Size()
	if off >= 0 && off != size {
		return size, &registryapi.UploadRangeError{Offset: off, Size: size}
	}
	buf := make([]byte, copyBufferSize)
	if _, err := io.CopyBuffer(u.in, io.LimitReader(body, r.maxBlobSize-size), buf); err != nil {
		if errors.Is(err, errdefs.ErrNoSpace) {
			// The disk is full: the session's bytes would keep it full. They are removed, and
			// the client starts over once there is room.
			r.remove(u)
			r.log.Warn("upload removed: the store's disk is full", "repo", repo, "upload", id, "bytes", size)
			return 0, fmt.Errorf("upload %s of %s: %w", id, repo, err)
		}
		// What arrived is a prefix of the blob, hashed in order: the client may resume from it.
		return u.in.Size(), fmt.Errorf("upload %s of %s: %w", id, repo, err)
	}
	var one [1]byte
	if n, _ := io.ReadFull(body, one[:]); n > 0 {
		r.remove(u)
		r.log.Info("upload over the blob size limit removed", "repo", repo, "upload", id, "limit", r.maxBlobSize)
		return 0, fmt.Errorf("upload %s of %s: over %d bytes: %w", id, repo, r.maxBlobSize, errdefs.ErrTooLarge)
	}
	return u.in.Size(), nil
}

// UploadSize returns the bytes the session holds, without waiting for a request writing to it.
func (r *Registry) UploadSize(_ context.Context, repo, id string) (int64, error) {
	r.mu.Lock()
	u := r.uploads[id]
	r.mu.Unlock()
	if u == nil || u.repo != repo || u.ended.Load() {
		return 0, fmt.Errorf("upload %s of %s: %w", id, repo, registryapi.ErrUploadUnknown)
	}
	return u.in.Size(), nil
}

// FinishUpload commits the session's bytes as blob d of repo. The session ends whatever the
// result: on a digest mismatch its bytes are removed.
func (r *Registry) FinishUpload(ctx context.Context, repo, id string, d digest.Digest) (int64, error) {
	u, err := r.acquire(ctx, repo, id)
	if err != nil {
		return 0, err
	}
	defer r.release(u)
	defer r.remove(u)
	defer r.hold(d)()
	size := u.in.Size()
	created, err := u.in.Commit(d)
	if err != nil {
		if errors.Is(err, errdefs.ErrDigestMismatch) {
			r.log.Info("upload does not match its digest", "repo", repo, "upload", id, "digest", d, "bytes", size)
		}
		return 0, err
	}
	if err := r.db.Update(func(tx *bolt.Tx) error { return addBlob(tx, repo, d, size) }); err != nil {
		return 0, indexError("blob", d, err)
	}
	r.log.Info("blob committed", "repo", repo, "digest", d, "bytes", size, "new", created)
	r.committed(d)
	return size, nil
}

// CancelUpload ends the session and removes its bytes.
func (r *Registry) CancelUpload(ctx context.Context, repo, id string) error {
	u, err := r.acquire(ctx, repo, id)
	if err != nil {
		return err
	}
	defer r.release(u)
	r.remove(u)
	return nil
}

// MountBlob makes blob d of from (any hosted repository when from is "") a blob of repo.
func (r *Registry) MountBlob(_ context.Context, repo, from string, d digest.Digest) error {
	var size int64
	found := false
	_ = r.db.View(func(tx *bolt.Tx) error {
		if from != "" {
			size, found = blobSize(tx, from, d)
			return nil
		}
		scan(tx.Bucket(bucketRefs), prefix(d.String()), func(k, _ []byte) bool {
			if holder, why, ok := cutLast(string(k)); ok && why == "b" {
				size, found = blobSize(tx, holder, d)
			}
			return !found
		})
		return nil
	})
	if !found {
		return fmt.Errorf("blob %s in %q: %w", d, from, errdefs.ErrNotFound)
	}
	if _, err := r.st.Stat(d); err != nil {
		return err
	}
	if err := r.db.Update(func(tx *bolt.Tx) error { return addBlob(tx, repo, d, size) }); err != nil {
		return fmt.Errorf("hosted: indexing blob %s: %w", d, err)
	}
	return nil
}

// cutLast splits "repo NUL why" at its last separator.
func cutLast(s string) (before, after string, ok bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == 0 {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

// expire removes the sessions idle for longer than the upload timeout at now.
func (r *Registry) expire(now time.Time) {
	var old []*upload
	r.mu.Lock()
	for id, u := range r.uploads {
		if u.busy == 0 && now.Sub(u.last) > r.uploadTimeout {
			delete(r.uploads, id)
			old = append(old, u)
		}
	}
	r.mu.Unlock()
	for _, u := range old {
		u.end()
		r.log.Info("abandoned upload removed", "repo", u.repo, "upload", u.id, "bytes", u.in.Size())
	}
}

// indexError is a failed update of the hosted index: errdefs.ErrNoSpace when the disk is full, so
// the client is told (507) rather than given an internal error.
func indexError(what string, d digest.Digest, err error) error {
	if diskio.Full(err) {
		return fmt.Errorf("hosted: indexing %s %s: %w: %w", what, d, errdefs.ErrNoSpace, err)
	}
	return fmt.Errorf("hosted: indexing %s %s: %w", what, d, err)
}
