// Package demo runs Shoal's main job end to end in one process: an origin registry holding a
// generated image, a small cluster of agents in front of it, and a client pulling through them.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/p2p"
)

// LayerSizes is the demo image: four layers of random bytes, 41 MiB in all.
var LayerSizes = []int64{1 << 20, 4 << 20, 12 << 20, 24 << 20}

// Nodes is how many agents the demo runs.
const Nodes = 3

// Run performs the demo and writes its report to out: an origin holding a generated image, three
// agents that find each other through the DHT, a pull through node 1, then through nodes 2 and 3,
// and a second pull through node 1.
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

	base, err := os.MkdirTemp("", "shoal-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	actx, stop := context.WithCancel(ctx)
	var nodes []*demoNode
	defer func() {
		stop()
		for _, n := range nodes {
			<-n.done
		}
	}()
	for i := 0; i < Nodes; i++ {
		var boot []string
		if i > 0 {
			boot = nodes[0].a.Node().Addrs()
		}
		n, err := startNode(actx, filepath.Join(base, fmt.Sprintf("node%d", i+1)), origin.URL(), boot)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		if err := waitUntil(ctx, 10*time.Second, func() bool { return n.a.Node().RoutingTableSize() > 0 }); err != nil {
			return fmt.Errorf("nodes did not find each other: %w", err)
		}
	}

	fmt.Fprintf(out, "Shoal demo: %d agents that find each other through a private Kademlia DHT, and an origin registry (%s)\n", Nodes, origin.Host())
	fmt.Fprintf(out, "image demo/app:v1  %s  %d layers, %s\n\n", imgDigest, len(LayerSizes), human(size))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pull\tnode\ttime\tfrom cache\tfrom peers\tfrom origin\t")
	order := []int{0, 1, 2, 0}
	for step, i := range order {
		n := nodes[i]
		if step > 0 && i != 0 {
			// Wait until node 1's content is advertised, as it would be long since in a cluster.
			if err := waitAdvertised(ctx, n, img); err != nil {
				return err
			}
		}
		before := fetchedBySource(n.a.Gatherer())
		cacheBefore := servedBySource(n.a.Gatherer())["cache"]
		start := time.Now()
		got, err := pull(ctx, n.host+"/demo/app:v1")
		if err != nil {
			return fmt.Errorf("pull through node %d: %w", i+1, err)
		}
		if got != size {
			return fmt.Errorf("pull through node %d: got %d layer bytes, want %d", i+1, got, size)
		}
		took := time.Since(start)
		after := fetchedBySource(n.a.Gatherer())
		cache := servedBySource(n.a.Gatherer())["cache"] - cacheBefore
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t\n", step+1, i+1, took.Round(time.Millisecond),
			human(int64(cache)), human(int64(after["peer"]-before["peer"])), human(int64(after["origin"]-before["origin"])))
	}
	tw.Flush()
	gets, blobs := 0, 0
	for k, v := range origin.Requests() {
		if strings.HasPrefix(k, "GET ") && strings.Contains(k, "/blobs/") {
			gets += v
			blobs++
		}
	}
	fmt.Fprintf(out, "\nThe origin served %d blob GETs for %d blobs (%s in all): each blob once, for the whole cluster.\n", gets, blobs, human(origin.BytesServed()))
	fmt.Fprintln(out, "Each blob was fetched from the origin by its coordinator, the node closest to it in the DHT; every")
	fmt.Fprintln(out, "other pull took it from peers, in chunks verified against the blob's digest (a coordinator's own")
	fmt.Fprintln(out, "pull finds it in its store), and node 1's second pull came from its own store.")
	return nil
}

type demoNode struct {
	a    *agent.Agent
	host string
	done chan struct{}
}

func startNode(ctx context.Context, dir, registry string, bootstrap []string) (*demoNode, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a, err := agent.New(agent.Config{
		DataDir:    dir,
		Registries: []string{registry},
		P2P:        &p2p.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: bootstrap},
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	n := &demoNode{a: a, host: ln.Addr().String(), done: make(chan struct{})}
	go func() { defer close(n.done); _ = a.Serve(ctx, ln) }()
	return n, nil
}

// waitAdvertised waits until node n can find a provider of every blob of img.
func waitAdvertised(ctx context.Context, n *demoNode, img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		h, _ := l.Digest()
		d := digest.Digest(h.String())
		err := waitUntil(ctx, 10*time.Second, func() bool {
			ps, _ := n.a.Node().FindProviders(ctx, d)
			return len(ps) > 0
		})
		if err != nil {
			return fmt.Errorf("layer %s was not advertised: %w", d, err)
		}
	}
	return nil
}

func waitUntil(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
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

func fetchedBySource(g prometheus.Gatherer) map[string]float64 {
	return counterBySource(g, "shoal_fetched_bytes_total")
}

func servedBySource(g prometheus.Gatherer) map[string]float64 {
	return counterBySource(g, "shoal_served_bytes_total")
}

func counterBySource(g prometheus.Gatherer, name string) map[string]float64 {
	out := map[string]float64{}
	mfs, err := g.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
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
