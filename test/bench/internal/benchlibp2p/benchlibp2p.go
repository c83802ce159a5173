// Package benchlibp2p is the raw libp2p baseline of the peer-transfer benchmark: two hosts
// configured as the agents' are (p2p.New), one stream, and a receiver that discards the bytes or
// does the least a verifying store-and-forward node must (hash each chunk, write it to a file).
package benchlibp2p

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoal-oci/shoal/p2p"
)

// rawProto is the benchmark's own protocol for the raw libp2p baseline.
const rawProto protocol.ID = "/shoal-bench/raw/1"

// Pair is two in-process libp2p hosts built by p2p.New, so with exactly the agents' host
// configuration (TCP, TLS 1.3, yamux, Shoal's resource and connection limits), connected to each
// other. The DHT is not started (Run is never called).
type Pair struct {
	send, recv *p2p.Node
	got        chan rawResult
	// How the receiver treats the bytes; set before each run (runs are sequential).
	mode   Mode
	outDir string // where the store modes write their files (kept until the pair is closed)
	files  int
}

// Mode is what the raw libp2p receiver does with the bytes.
type Mode int

const (
	// Discard: io.Copy(io.Discard, stream), the raw protocol cost.
	Discard Mode = iota
	// StoreSerial: the least any verifying store-and-forward receiver does, in one goroutine as
	// the agent's fetch does: read a 4 MiB chunk, SHA-256 it, write it to a new file.
	StoreSerial
	// StorePipelined: the same with the reading and hashing in one goroutine and the writing in
	// another (two buffers), so the two overlap.
	StorePipelined
)

const storeChunk = 4 << 20

// receive consumes one stream according to p.mode and returns the bytes read.
func (p *Pair) receive(s network.Stream) (int64, error) {
	if p.mode == Discard {
		return io.Copy(io.Discard, s)
	}
	p.files++
	out, err := os.Create(filepath.Join(p.outDir, fmt.Sprintf("store-floor-%d", p.files)))
	if err != nil {
		return 0, err
	}
	defer out.Close()
	var n int64
	readChunk := func(b []byte) ([]byte, error) {
		m, err := io.ReadFull(s, b)
		if err == io.ErrUnexpectedEOF || (err == io.EOF && m == 0) {
			if m == 0 {
				return nil, io.EOF
			}
			err = nil
		}
		n += int64(m)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b[:m])
		_ = sum
		return b[:m], nil
	}
	if p.mode == StoreSerial {
		b := make([]byte, storeChunk)
		for {
			c, err := readChunk(b)
			if err == io.EOF {
				return n, nil
			}
			if err != nil {
				return n, err
			}
			if _, err := out.Write(c); err != nil {
				return n, err
			}
		}
	}
	full := make(chan []byte, 1)
	free := make(chan []byte, 2)
	free <- make([]byte, storeChunk)
	free <- make([]byte, storeChunk)
	var rerr error
	go func() {
		defer close(full)
		for b := range free {
			c, err := readChunk(b[:cap(b)])
			if err != nil {
				if err != io.EOF {
					rerr = err
				}
				return
			}
			full <- c
		}
	}()
	var werr error
	for c := range full {
		if werr == nil {
			_, werr = out.Write(c)
		}
		free <- c
	}
	close(free)
	return n, errors.Join(rerr, werr)
}

type rawResult struct {
	n   int64
	err error
}

// NewPair builds the two hosts, with data directories dirA and dirB, connects them, and lets the
// store modes write into outDir.
func NewPair(ctx context.Context, dirA, dirB, outDir string) (*Pair, error) {
	mk := func(dir string) (*p2p.Node, error) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		return p2p.New(p2p.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, DataDir: dir})
	}
	recv, err := mk(dirA)
	if err != nil {
		return nil, err
	}
	send, err := mk(dirB)
	if err != nil {
		recv.Close()
		return nil, err
	}
	p := &Pair{send: send, recv: recv, got: make(chan rawResult, 1), outDir: outDir}
	recv.Host().SetStreamHandler(rawProto, func(s network.Stream) {
		n, err := p.receive(s)
		_ = s.Close()
		p.got <- rawResult{n, err}
	})
	if err := send.Host().Connect(ctx, peer.AddrInfo{ID: recv.ID(), Addrs: recv.Host().Addrs()}); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Close closes both hosts.
func (p *Pair) Close() {
	_ = p.send.Close()
	_ = p.recv.Close()
}

// Run sends the file over one new stream with io.Copy(stream, file) and returns the time from
// opening the stream to the receiver's end of stream, the receiver doing what mode says.
func (p *Pair) Run(ctx context.Context, path string, mode Mode) (time.Duration, error) {
	p.mode = mode
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	s, err := p.send.Host().NewStream(ctx, p.recv.ID(), rawProto)
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(s, f); err != nil {
		_ = s.Reset()
		return 0, err
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return 0, err
	}
	var r rawResult
	select {
	case r = <-p.got:
	case <-ctx.Done():
		_ = s.Reset()
		return 0, ctx.Err()
	}
	elapsed := time.Since(start)
	_ = s.Close()
	if r.err != nil {
		return 0, r.err
	}
	if r.n != fi.Size() {
		return 0, fmt.Errorf("raw libp2p received %d bytes, want %d", r.n, fi.Size())
	}
	return elapsed, nil
}
