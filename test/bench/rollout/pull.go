package main

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

// blobTiming is one blob of a pull.
type blobTiming struct {
	digest     string
	start, end time.Time // first request sent; last byte of the successful attempt
	ttfb       time.Duration
	attempts   int
}

// pullResult is one node's pull of the image.
type pullResult struct {
	node, wave int
	start, end time.Time // before the manifest GET; last byte of the last blob
	manifest   time.Duration
	firstLayer time.Duration // the first layer's GET sent → its first body byte
	firstByte  time.Duration // pull start (before the manifest GET) → the first layer's first byte
	bytes      int64
	retries    int
	blobs      []blobTiming
	err        error
}

func (p *pullResult) duration() time.Duration { return p.end.Sub(p.start) }

// clientBytes counts every body byte the pulling clients received, for the timeline.
var clientBytes atomic.Int64

// newRuntimeClient is one node's container runtime: its own connections to its own agent.
func newRuntimeClient(parallel int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: parallel + 1, IdleConnTimeout: time.Minute,
		DisableCompression: true, ResponseHeaderTimeout: 5 * time.Minute,
	}}
}

// pull does what a runtime does: GET the manifest by tag (OCI Accept), then the config and every
// layer, `parallel` at a time in manifest order (containerd's default is 3), each verified
// against its digest. A blob that fails is asked again from the start, up to 3 attempts.
func pull(ctx context.Context, c *http.Client, base string, want *image, parallel int) *pullResult {
	r := &pullResult{start: time.Now()}
	fail := func(err error) *pullResult {
		r.err, r.end = err, time.Now()
		return r
	}
	url := fmt.Sprintf("%s/v2/%s/manifests/%s", base, repoName, tagName)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", manifestType)
	resp, err := c.Do(req)
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
	r.manifest = time.Since(r.start)
	if sum := sha256.Sum256(body); "sha256:"+hex.EncodeToString(sum[:]) != want.digest {
		return fail(fmt.Errorf("manifest by tag is not the pushed one (%.300s)", body))
	}
	var m struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return fail(fmt.Errorf("manifest: %w", err))
	}
	blobs := append([]descriptor{m.Config}, m.Layers...)
	r.blobs = make([]blobTiming, len(blobs))
	errs := make([]error, len(blobs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, d := range blobs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			bt := &r.blobs[i]
			bt.digest, bt.start = d.Digest, time.Now()
			for bt.attempts < 3 {
				bt.attempts++
				ttfb, err := getBlob(ctx, c, base, d)
				if err == nil {
					bt.ttfb, bt.end = ttfb, time.Now()
					errs[i] = nil
					return
				}
				errs[i] = fmt.Errorf("blob %s (attempt %d): %w", d.Digest, bt.attempts, err)
				if ctx.Err() != nil {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	for i, bt := range r.blobs {
		r.retries += bt.attempts - 1
		if errs[i] == nil {
			r.bytes += blobs[i].Size
		}
		if bt.end.After(r.end) {
			r.end = bt.end
		}
	}
	if len(m.Layers) > 0 {
		// The first layer's time to first byte of the attempt that succeeded.
		r.firstLayer = r.blobs[1].ttfb
		r.firstByte = r.blobs[1].start.Add(r.firstLayer).Sub(r.start)
	}
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	return r
}

// getBlob GETs one blob, verifying its size and digest, and returns the time from sending the
// request to the first body byte.
func getBlob(ctx context.Context, c *http.Client, base string, d descriptor) (time.Duration, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v2/%s/blobs/%s", base, repoName, d.Digest), nil)
	start := time.Now()
	resp, err := c.Do(req)
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
			clientBytes.Add(int64(k))
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

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
