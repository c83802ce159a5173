// Package demo runs Shoal's main job end to end in one process: an origin registry holding a
// generated image, an agent in front of it, and a client pulling through the agent.
package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/devregistry"
)

// LayerSizes is the demo image: four layers of random bytes, 41 MiB in all.
var LayerSizes = []int64{1 << 20, 4 << 20, 12 << 20, 24 << 20}

// Run performs the demo and writes its report to out.
func Run(ctx context.Context, out io.Writer) error {
	origin, err := devregistry.Start("")
	if err != nil {
		return err
	}
	defer origin.Close()
	img, err := devregistry.Image(LayerSizes, false, "linux/amd64")
	if err != nil {
		return err
	}
	if err := devregistry.Push(origin.Host()+"/demo/app:v1", img); err != nil {
		return fmt.Errorf("seeding the origin: %w", err)
	}
	imgDigest, _ := img.Digest()
	size, err := layerBytes(img)
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "shoal-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{DataDir: dir, Registries: []string{origin.URL()}})
	if err != nil {
		ln.Close()
		return err
	}
	actx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Serve(actx, ln) }()
	defer func() { stop(); <-done }()

	fmt.Fprintf(out, "Shoal demo: one agent (%s, store in %s) in front of an origin registry (%s)\n", ln.Addr(), dir, origin.Host())
	fmt.Fprintf(out, "image demo/app:v1  %s  %d layers, %s\n\n", imgDigest, len(LayerSizes), human(size))
	ref := ln.Addr().String() + "/demo/app:v1"
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pull\ttime\tfrom origin\tfrom cache\torigin requests\t")
	for i := 1; i <= 2; i++ {
		origin.ResetCounts()
		before := servedBySource(a.Gatherer())
		start := time.Now()
		got, err := pull(ctx, ref)
		if err != nil {
			return fmt.Errorf("pull %d: %w", i, err)
		}
		if got != size {
			return fmt.Errorf("pull %d: got %d layer bytes, want %d", i, got, size)
		}
		took := time.Since(start)
		after := servedBySource(a.Gatherer())
		reqs := 0
		for _, n := range origin.Requests() {
			reqs += n
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t\n", i, took.Round(time.Millisecond),
			human(origin.BytesServed()), human(int64(after["cache"]-before["cache"])), reqs)
	}
	tw.Flush()
	fmt.Fprintln(out, "\nThe first pull streamed every blob from the origin through the agent's verified store;")
	fmt.Fprintln(out, "the second was served from the store without contacting the origin (tag resolution cached).")
	return nil
}

// pull reads the image through the mirror with go-containerregistry's client, which checks
// every layer against its digest, and returns the layer bytes read.
func pull(ctx context.Context, ref string) (int64, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return 0, err
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return 0, err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return 0, err
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return total, err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func layerBytes(img interface {
	Layers() ([]v1.Layer, error)
}) (int64, error) {
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, l := range layers {
		s, err := l.Size()
		if err != nil {
			return 0, err
		}
		n += s
	}
	return n, nil
}

func servedBySource(g prometheus.Gatherer) map[string]float64 {
	out := map[string]float64{}
	mfs, err := g.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "shoal_served_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func human(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
