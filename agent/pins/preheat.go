package pins

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/resolve"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/internal/reference"
)

// PreheatRequest asks a node to fetch an image and keep it.
type PreheatRequest struct {
	Ref string `json:"ref"`
	// Platforms selects the manifests of an index, as os/arch[/variant]; empty means the node's
	// own platform (linux/<arch> on Linux), unless AllPlatforms.
	Platforms    []string `json:"platforms,omitempty"`
	AllPlatforms bool     `json:"allPlatforms,omitempty"`
	// Replicas is how many seeds should keep the image (pins only; 0 keeps the node's default).
	Replicas int `json:"replicas,omitempty"`
}

// Progress is one report of a preheat (or pin) in progress, sent as a line of JSON.
type Progress struct {
	// Event is "resolved" (the manifests are in and the totals known), "progress", "done" or
	// "error".
	Event     string        `json:"event"`
	Ref       string        `json:"ref,omitempty"`
	Digest    digest.Digest `json:"digest,omitempty"`
	Manifests int           `json:"manifests,omitempty"`
	Blobs     int           `json:"blobs"`
	BlobsDone int           `json:"blobsDone"`
	Bytes     int64         `json:"bytes"`
	BytesDone int64         `json:"bytesDone"`
	// Pinned is set on "done" when the image is pinned.
	Pinned bool   `json:"pinned,omitempty"`
	Error  string `json:"error,omitempty"`
}

const (
	// preheatParallel is how many blobs a preheat fetches at once.
	preheatParallel = 3
	// progressInterval is how often a preheat reports bytes while blobs arrive.
	progressInterval = 500 * time.Millisecond
	// maxIndexDepth bounds nested indexes.
	maxIndexDepth = 2
	// maxImageObjects bounds how many manifests and blobs one image may name.
	maxImageObjects = 10000
)

// Preheat fetches an image — the index, every selected platform's manifest, its config and
// layers — through the node's pipeline (store, peers, the coordinator, the origin), so that each
// blob comes from the origin about once however many seeds preheat it. It reports progress to
// report (never concurrently) and returns the record that pins the image.
func (p *Pins) Preheat(ctx context.Context, req PreheatRequest, report func(Progress)) (Pin, error) {
	pin, release, err := p.preheat(ctx, req, report)
	release()
	return pin, err
}

// preheat is Preheat, holding the image's content until release is called (always).
func (p *Pins) preheat(ctx context.Context, req PreheatRequest, report func(Progress)) (_ Pin, release func(), _ error) {
	none := func() {}
	ref, err := reference.Parse(req.Ref)
	if err != nil {
		return Pin{}, none, err
	}
	platforms, err := ParsePlatforms(req)
	if err != nil {
		return Pin{}, none, err
	}
	t, err := p.targets.Target(ref.Registry, ref.Repo)
	if err != nil {
		return Pin{}, none, fmt.Errorf("%s: %w", ref, err)
	}
	return p.fetchImage(ctx, t, ref, platforms, req, report)
}

// FetchImage is Preheat of a parsed reference at a chosen target (a nil Registry: the cluster
// only, as for a pushed image); platforms nil selects every platform. While it runs, the image's
// content is held from garbage collection (records.Pins.Hold); a pin recorded afterwards keeps it, and
// is refused if GC took any of it meanwhile.
func (p *Pins) FetchImage(ctx context.Context, t fetch.Target, ref reference.Ref, platforms []v1.Platform, req PreheatRequest, report func(Progress)) (Pin, error) {
	pin, release, err := p.fetchImage(ctx, t, ref, platforms, req, report)
	release()
	return pin, err
}

// fetchImage is FetchImage, holding the image's content until release is called (always).
func (p *Pins) fetchImage(ctx context.Context, t fetch.Target, ref reference.Ref, platforms []v1.Platform, req PreheatRequest, report func(Progress)) (_ Pin, release func(), _ error) {
	w := &walk{p: p, t: t, platforms: platforms, seen: map[digest.Digest]bool{}}
	release = w.release
	root, err := p.manifests.Get(ctx, t, ref.Reference(), oci.ManifestTypes())
	if err != nil {
		return Pin{}, release, fmt.Errorf("%s: %w", ref, err)
	}
	if err := w.manifest(ctx, root, 0); err != nil {
		return Pin{}, release, fmt.Errorf("%s: %w", ref, err)
	}
	var total int64
	for _, b := range w.blobs {
		total += b.Size
	}
	if limit := p.st.Limit(); limit > 0 && total > limit {
		// Held in full, it would push everything else out and still not fit.
		return Pin{}, release, fmt.Errorf("%s: %d bytes of blobs, more than the store's limit of %d: %w", ref, total, limit, errdefs.ErrNoSpace)
	}
	prog := Progress{Ref: ref.String(), Digest: root.Digest, Manifests: len(w.manifests), Blobs: len(w.blobs), Bytes: total}
	var mu sync.Mutex
	emit := func(event string) {
		mu.Lock()
		defer mu.Unlock()
		q := prog
		q.Event = event
		report(q)
	}
	emit("resolved")

	var done atomic.Int64
	stop := make(chan struct{})
	ticker := sync.WaitGroup{}
	ticker.Add(1)
	go func() {
		defer ticker.Done()
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				mu.Lock()
				prog.BytesDone = done.Load()
				mu.Unlock()
				emit("progress")
			}
		}
	}()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(preheatParallel)
	for _, b := range w.blobs {
		g.Go(func() error {
			if err := p.fetchBlob(gctx, t, b, &done); err != nil {
				return fmt.Errorf("blob %s: %w", b.Digest, err)
			}
			mu.Lock()
			prog.BlobsDone++
			mu.Unlock()
			return nil
		})
	}
	err = g.Wait()
	close(stop)
	ticker.Wait()
	if err != nil {
		return Pin{}, release, fmt.Errorf("%s: %w", ref, err)
	}
	prog.BytesDone = done.Load()
	emit("progress")
	pin := Pin{
		Ref: ref.String(), Registry: ref.Registry, Repo: ref.Repo, Tag: ref.Tag,
		Digest: root.Digest, MediaType: root.MediaType, Bytes: total, Replicas: req.Replicas, Created: time.Now().UTC(),
		Platforms: req.Platforms, AllPlatforms: req.AllPlatforms, Manifests: len(w.manifests),
	}
	pin.Digests = append(pin.Digests, w.manifests...)
	for _, b := range w.blobs {
		pin.Digests = append(pin.Digests, b.Digest)
	}
	return pin, release, nil
}

// walk collects an image's manifests and blobs.
type walk struct {
	p         *Pins
	t         fetch.Target
	platforms []v1.Platform // nil: all
	seen      map[digest.Digest]bool
	manifests []digest.Digest
	blobs     []oci.Descriptor
	// holds release what the walk holds from garbage collection: every digest it found, from
	// the moment it is found, so that a preheat larger than the room left does not evict its
	// own first objects to make room for its last ones.
	holds []func()
}

// add records d and holds it, reporting whether it is new; past maxImageObjects the walk fails.
func (w *walk) add(d digest.Digest) (bool, error) {
	if w.seen[d] {
		return false, nil
	}
	if len(w.seen) >= maxImageObjects {
		return false, fmt.Errorf("the image names more than %d objects: %w", maxImageObjects, errdefs.ErrTooLarge)
	}
	w.seen[d] = true
	w.holds = append(w.holds, w.p.st.Pins().Hold(d))
	return true, nil
}

// release lets garbage collection have what the walk held.
func (w *walk) release() {
	for _, r := range w.holds {
		r()
	}
	w.holds = nil
}

func (w *walk) manifest(ctx context.Context, m *resolve.Manifest, depth int) error {
	if fresh, err := w.add(m.Digest); !fresh || err != nil {
		return err
	}
	w.manifests = append(w.manifests, m.Digest)
	var doc oci.Manifest
	if err := json.Unmarshal(m.Body, &doc); err != nil {
		return fmt.Errorf("manifest %s: %v: %w", m.Digest, err, errdefs.ErrInvalid)
	}
	if doc.IsIndex() {
		if depth >= maxIndexDepth {
			return fmt.Errorf("index %s nests too deep: %w", m.Digest, errdefs.ErrInvalid)
		}
		matched := 0
		for _, c := range doc.Manifests {
			nested := oci.IsIndexType(c.MediaType)
			if !nested && !w.wants(c.Platform) {
				continue // a nested index has no platform of its own: its entries are selected
			}
			matched++
			d, err := digest.Parse(c.Digest.String())
			if err != nil {
				return fmt.Errorf("index %s names %q: %w", m.Digest, c.Digest, errdefs.ErrInvalid)
			}
			child, err := w.p.manifests.Get(ctx, w.t, d.String(), oci.ManifestTypes())
			if err != nil {
				return fmt.Errorf("manifest %s: %w", d, err)
			}
			if err := w.manifest(ctx, child, depth+1); err != nil {
				return err
			}
		}
		if matched == 0 && w.platforms != nil {
			return fmt.Errorf("index %s has no manifest for %s: %w", m.Digest, platformList(w.platforms), errdefs.ErrNotFound)
		}
		return nil
	}
	// An image manifest (config and layers) or an artifact manifest (blobs, no config). A config
	// without a digest is skipped, not refused.
	descs := append(slices.Clone(doc.Layers), doc.Blobs...)
	if doc.Config != nil && doc.Config.Digest != "" {
		descs = append([]oci.Descriptor{*doc.Config}, descs...)
	}
	for _, desc := range descs {
		if len(desc.URLs) > 0 {
			continue // a foreign layer: the runtime gets it from its URLs, not from a registry
		}
		d, err := digest.Parse(desc.Digest.String())
		if err != nil || desc.Size < 0 {
			return fmt.Errorf("manifest %s names %q: %w", m.Digest, desc.Digest, errdefs.ErrInvalid)
		}
		fresh, err := w.add(d)
		if err != nil {
			return err
		}
		if fresh {
			w.blobs = append(w.blobs, desc)
		}
	}
	return nil
}

// wants reports whether an index entry's platform is selected. Entries without a platform
// (attestations, artifacts) are taken only with all platforms.
func (w *walk) wants(p *v1.Platform) bool {
	if w.platforms == nil {
		return true
	}
	if p == nil {
		return false
	}
	for _, want := range w.platforms {
		if p.Satisfies(want) {
			return true
		}
	}
	return false
}

// fetchBlob drives one blob through the pipeline to the store, counting its bytes into done as
// they arrive (all at once for a blob already held).
func (p *Pins) fetchBlob(ctx context.Context, t fetch.Target, desc oci.Descriptor, done *atomic.Int64) error {
	var arrived atomic.Int64
	size, err := p.blobs.Fetch(ctx, t, desc.Digest, countWriter{&arrived, done})
	if err != nil {
		return err
	}
	if size != desc.Size {
		return fmt.Errorf("%d bytes where the manifest says %d: %w", size, desc.Size, errdefs.ErrInvalid)
	}
	done.Add(size - arrived.Load())
	return nil
}

// countWriter counts what is written into a blob's and the preheat's totals.
type countWriter struct{ blob, all *atomic.Int64 }

func (c countWriter) Write(p []byte) (int, error) {
	c.blob.Add(int64(len(p)))
	c.all.Add(int64(len(p)))
	return len(p), nil
}

var _ io.Writer = countWriter{}

// ParsePlatforms returns the platforms a request selects (nil: every platform): its Platforms
// as os/arch[/variant], or the node's own platform when it names none, unless AllPlatforms.
func ParsePlatforms(req PreheatRequest) ([]v1.Platform, error) {
	if req.AllPlatforms {
		if len(req.Platforms) > 0 {
			return nil, fmt.Errorf("platforms and all platforms are exclusive: %w", errdefs.ErrInvalid)
		}
		return nil, nil
	}
	specs := req.Platforms
	if len(specs) == 0 {
		specs = []string{"linux/" + runtime.GOARCH}
	}
	var out []v1.Platform
	for _, s := range specs {
		p, err := v1.ParsePlatform(s)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("platform %q: want os/arch[/variant]: %w", s, errdefs.ErrInvalid)
		}
		out = append(out, *p)
	}
	return out, nil
}

func platformList(ps []v1.Platform) string {
	var s string
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += p.String()
	}
	return s
}
