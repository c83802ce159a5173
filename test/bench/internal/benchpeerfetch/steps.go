package benchpeerfetch

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/chunks"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
)

// Steps are the durations (ms) of the steps of the agent's peer fetch, done one by one with the
// same public APIs (p2p.Node.FindProviders, transfer.Client) on a node that has never looked the
// digest up: what a requester's time to first byte is made of, outside the agent's goroutines.
type Steps struct {
	Lookup float64 // FindProviders, until it returns
	Map    float64 // the holder's chunk map
	Open   float64 // a whole-blob range request, to its header
	Chunk  float64 // the first chunk's bytes
	Verify float64 // the first chunk checked against the map
	Store  float64 // up to 256 KiB of it written to a new file in tmpDir
}

// TimeSteps does a peer fetch's steps for d one at a time from node, asking the first of
// holders that the lookup finds, and times each. On an error it returns the steps timed so far.
func TimeSteps(ctx context.Context, node *p2p.Node, tmpDir string, holders []peer.ID, d digest.Digest) (Steps, error) {
	var st Steps
	t := time.Now()
	lap := func() float64 { now := time.Now(); v := float64(now.Sub(t)) / 1e6; t = now; return v }
	ps, err := node.FindProviders(ctx, d)
	st.Lookup = lap()
	if err != nil {
		return st, err
	}
	i := slices.IndexFunc(ps, func(p peer.AddrInfo) bool { return slices.Contains(holders, p.ID) })
	if i < 0 {
		return st, fmt.Errorf("none of the %d providers found holds it", len(ps))
	}
	holder := ps[i].ID
	c := transfer.NewClient(node.Host())
	m, err := c.Map(ctx, holder, d, chunks.DefaultPieceSize)
	st.Map = lap()
	if err != nil {
		return st, err
	}
	rg, err := c.Get(ctx, holder, d, 0, -1)
	st.Open = lap()
	if err != nil {
		return st, err
	}
	defer rg.Close()
	_, size := m.Range(0)
	buf := make([]byte, size)
	_, err = io.ReadFull(rg, buf)
	st.Chunk = lap()
	if err != nil {
		return st, err
	}
	err = m.Verify(0, buf)
	st.Verify = lap()
	if err != nil {
		return st, err
	}
	f, err := os.CreateTemp(tmpDir, "steps-*")
	if err != nil {
		return st, err
	}
	_, err = f.Write(buf[:min(len(buf), 256<<10)])
	f.Close()
	os.Remove(f.Name())
	st.Store = lap()
	return st, err
}
