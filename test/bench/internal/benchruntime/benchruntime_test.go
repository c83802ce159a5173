package benchruntime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchorigin"
)

// A runtime pulls the pushed image by tag from a real registry, checks every blob, counts what it
// received, and fails a pull whose manifest or blob is not the one it wants.
func TestPull(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	im, err := MakeImage(dir, 300<<10+1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Layers) != 3 || im.LayerBytes() != 300<<10+1 || im.Bytes() != im.LayerBytes()+im.Config.Size {
		t.Fatalf("image: %d layers, %d layer bytes, %d bytes", len(im.Layers), im.LayerBytes(), im.Bytes())
	}
	o, err := benchorigin.Start(dir, benchorigin.Pacing{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	if err := im.Push(ctx, o.URL()); err != nil {
		t.Fatal(err)
	}

	var received atomic.Int64
	rt := New(2, &received)
	t.Cleanup(rt.Close)
	p := rt.Pull(ctx, o.URL(), im)
	if p.Err != nil {
		t.Fatal(p.Err)
	}
	if p.Bytes != im.Bytes() || received.Load() != im.Bytes() || p.Retries != 0 || len(p.Blobs) != 4 || p.End.Before(p.Start) {
		t.Fatalf("pull: %d bytes (received %d, want %d), %d retries, %d blobs", p.Bytes, received.Load(), im.Bytes(), p.Retries, len(p.Blobs))
	}
	for i, b := range p.Blobs {
		if want := append([]Descriptor{im.Config}, im.Layers...)[i].Digest; b.Digest != want || b.Attempts != 1 {
			t.Fatalf("blob %d: %+v, want %s", i, b, want)
		}
	}

	other := *im
	other.Digest = "sha256:" + strings.Repeat("0", 64)
	if p := rt.Pull(ctx, o.URL(), &other); p.Err == nil || !strings.Contains(p.Err.Error(), "not the pushed one") {
		t.Fatalf("a pull wanting another manifest: %v", p.Err)
	}

	// The same size, other bytes: every attempt fails the digest check.
	l := im.Layers[1]
	if err := os.WriteFile(filepath.Join(dir, "sha256", strings.TrimPrefix(l.Digest, "sha256:")), make([]byte, l.Size), 0o644); err != nil {
		t.Fatal(err)
	}
	p = rt.Pull(ctx, o.URL(), im)
	if p.Err == nil || !strings.Contains(p.Err.Error(), l.Digest) || !strings.Contains(p.Err.Error(), "content is") || p.Retries != 2 {
		t.Fatalf("a pull of a corrupt layer: %v, %d retries", p.Err, p.Retries)
	}
}

// A runtime with a credential pulls from an origin that refuses anonymous reads, sending it on
// every request; without it the pull fails with the origin's 401.
func TestPullWithCredential(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	im, err := MakeImage(dir, 64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	o, err := benchorigin.Start(dir, benchorigin.Pacing{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	if err := im.Push(ctx, o.URL()); err != nil {
		t.Fatal(err)
	}
	o.RequireAuth(map[string]string{"node": "pw"})
	var received atomic.Int64
	rt := New(2, &received)
	t.Cleanup(rt.Close)
	if p := rt.Pull(ctx, o.URL(), im); p.Err == nil || !strings.Contains(p.Err.Error(), "401") {
		t.Fatalf("an anonymous pull of a private image: %v", p.Err)
	}
	base := o.Counts().Requests
	rt.Authorization = benchorigin.BasicAuth("node", "pw")
	if p := rt.Pull(ctx, o.URL(), im); p.Err != nil || p.Bytes != im.Bytes() {
		t.Fatalf("a pull with the credential: %v, %d bytes", p.Err, p.Bytes)
	}
	if q := o.Counts().Requests; q.Unauthorized != base.Unauthorized || q.ManifestGets != base.ManifestGets+1 || q.BlobGets != base.BlobGets+3 {
		t.Fatalf("requests before %+v, after %+v", base, q)
	}
}
