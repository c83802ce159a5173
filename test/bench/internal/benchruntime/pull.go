package benchruntime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// BlobTiming is one blob of a pull.
type BlobTiming struct {
	Digest     string
	Start, End time.Time // first request sent; last byte of the successful attempt
	TTFB       time.Duration
	Attempts   int
}

// PullResult is one runtime's pull of the image.
type PullResult struct {
	Start, End time.Time // before the manifest GET; last byte of the last blob
	Manifest   time.Duration
	FirstLayer time.Duration // the first layer's GET sent → its first body byte
	FirstByte  time.Duration // pull start (before the manifest GET) → the first layer's first byte
	Bytes      int64
	Retries    int
	Blobs      []BlobTiming
	Err        error
}

// Duration is the pull's time, from the manifest request to the last byte of its last blob.
func (p *PullResult) Duration() time.Duration { return p.End.Sub(p.Start) }

// Runtime is one node's container runtime: its own HTTP connections to its own agent, and
// `parallel` blob downloads at a time. Close it when its pulls are done.
type Runtime struct {
	// Authorization, when set, is sent with every request: a pull secret's credential, which
	// containerd sends on every request to a registry once it has been challenged for it.
	Authorization string

	client   *http.Client
	parallel int
	received *atomic.Int64
}

// New returns a runtime that downloads parallel blobs at a time and adds every body byte it
// receives to received, which the runtimes of a run share for the timeline of what they
// received.
func New(parallel int, received *atomic.Int64) *Runtime {
	return &Runtime{client: &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: parallel + 1, IdleConnTimeout: time.Minute,
		DisableCompression: true, ResponseHeaderTimeout: 5 * time.Minute,
	}}, parallel: parallel, received: received}
}

// Close closes the runtime's idle connections.
func (rt *Runtime) Close() { rt.client.CloseIdleConnections() }

// Pull does what a runtime does, through the registry API at base (an agent's /v2): GET the
// manifest by tag (OCI Accept) and check that it is want's, then GET the config and every layer,
// `parallel` at a time in manifest order (containerd's default is 3), each verified against its
// digest. A blob that fails is asked again from the start, up to 3 attempts. A failed pull has
// Err set; its timings cover what was done.
func (rt *Runtime) Pull(ctx context.Context, base string, want *Image) *PullResult {
	r := &PullResult{Start: time.Now()}
	fail := func(err error) *PullResult {
		r.Err, r.End = err, time.Now()
		return r
	}
	url := fmt.Sprintf("%s/v2/%s/manifests/%s", base, Repository, Tag)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", ManifestType)
	resp, err := rt.do(req)
	if err != nil {
		return fail(fmt.Errorf("manifest: %w", err))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	if err != nil {
		return fail(fmt.Errorf("manifest: %w", err))
	}
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("manifest: %s: %.300s", resp.Status, body))
	}
	r.Manifest = time.Since(r.Start)
	if sum := sha256.Sum256(body); "sha256:"+hex.EncodeToString(sum[:]) != want.Digest {
		return fail(fmt.Errorf("manifest by tag is not the pushed one (%.300s)", body))
	}
	var m struct {
		Config Descriptor   `json:"config"`
		Layers []Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return fail(fmt.Errorf("manifest: %w", err))
	}
	blobs := append([]Descriptor{m.Config}, m.Layers...)
	r.Blobs = make([]BlobTiming, len(blobs))
	errs := make([]error, len(blobs))
	sem := make(chan struct{}, rt.parallel)
	var wg sync.WaitGroup
	for i, d := range blobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			bt := &r.Blobs[i]
			bt.Digest, bt.Start = d.Digest, time.Now()
			for bt.Attempts < 3 {
				bt.Attempts++
				ttfb, err := rt.getBlob(ctx, base, d)
				if err == nil {
					bt.TTFB, bt.End = ttfb, time.Now()
					errs[i] = nil
					return
				}
				errs[i] = fmt.Errorf("blob %s (attempt %d): %w", d.Digest, bt.Attempts, err)
				if ctx.Err() != nil {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	for i, bt := range r.Blobs {
		r.Retries += bt.Attempts - 1
		if errs[i] == nil {
			r.Bytes += blobs[i].Size
		}
		if bt.End.After(r.End) {
			r.End = bt.End
		}
	}
	if len(m.Layers) > 0 {
		// The first layer's time to first byte of the attempt that succeeded.
		r.FirstLayer = r.Blobs[1].TTFB
		r.FirstByte = r.Blobs[1].Start.Add(r.FirstLayer).Sub(r.Start)
	}
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	return r
}

// getBlob GETs one blob, verifying its size and digest, and returns the time from sending the
// request to the first body byte.
func (rt *Runtime) getBlob(ctx context.Context, base string, d Descriptor) (time.Duration, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v2/%s/blobs/%s", base, Repository, d.Digest), nil)
	start := time.Now()
	resp, err := rt.do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("%s: %.300s", resp.Status, b)
	}
	h := sha256.New()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	var ttfb time.Duration
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			if n == 0 {
				ttfb = time.Since(start)
			}
			n += int64(k)
			rt.received.Add(int64(k))
			h.Write(buf[:k])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return ttfb, fmt.Errorf("after %d bytes: %w", n, err)
		}
	}
	if n != d.Size {
		return ttfb, fmt.Errorf("got %d bytes, want %d", n, d.Size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.Digest {
		return ttfb, fmt.Errorf("content is %s", got)
	}
	return ttfb, nil
}

func (rt *Runtime) do(req *http.Request) (*http.Response, error) {
	if rt.Authorization != "" {
		req.Header.Set("Authorization", rt.Authorization)
	}
	return rt.client.Do(req)
}

// bufPool holds the runtimes' read buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
