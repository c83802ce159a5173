package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
)

func main() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("/tmp/i13cpu", "raw-")
	defer os.RemoveAll(dir)
	mk := func(d string) *p2p.Node {
		os.MkdirAll(d, 0o755)
		n, err := p2p.New(p2p.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, DataDir: d})
		if err != nil {
			panic(err)
		}
		return n
	}
	recv, send := mk(filepath.Join(dir, "a")), mk(filepath.Join(dir, "b"))
	defer recv.Close()
	defer send.Close()
	got := make(chan int64, 1)
	recv.Host().SetStreamHandler("/x/1", func(s network.Stream) {
		buf := make([]byte, 256<<10)
		var n int64
		for {
			k, err := s.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		s.Close()
		got <- n
	})
	if err := send.Host().Connect(ctx, peer.AddrInfo{ID: recv.ID(), Addrs: recv.Host().Addrs()}); err != nil {
		panic(err)
	}
	buf := make([]byte, 256<<10)
	for range 6 {
		c0, _ := benchproc.CPUTime(0)
		t := time.Now()
		s, err := send.Host().NewStream(ctx, recv.ID(), "/x/1")
		if err != nil {
			panic(err)
		}
		for range 4096 {
			if _, err := s.Write(buf); err != nil {
				panic(err)
			}
		}
		s.CloseWrite()
		n := <-got
		d := time.Since(t)
		c1, _ := benchproc.CPUTime(0)
		s.Close()
		_ = io.EOF
		fmt.Printf("raw 256K writes: %d bytes %.0f MB/s, CPU %.3f s/GiB\n", n, float64(1<<30)/d.Seconds()/1e6, (c1 - c0).Seconds())
		time.Sleep(200 * time.Millisecond)
	}
}
