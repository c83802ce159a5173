package tlsrecords

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ci "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
)

// countingConn counts the writes that reach the connection under TLS.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// securePair runs the security transport's handshake over a loopback TCP connection and returns
// both ends and the counter of the client's writes to TCP.
func securePair(t *testing.T) (client, server sec.SecureConn, counted *countingConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	keyC, _, _ := ci.GenerateEd25519Key(rand.Reader)
	keyS, _, _ := ci.GenerateEd25519Key(rand.Reader)
	idS, _ := peer.IDFromPrivateKey(keyS)
	tc, err := New(libp2ptls.ID, keyC, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := New(libp2ptls.ID, keyS, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		c   sec.SecureConn
		err error
	}
	done := make(chan res, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- res{nil, err}
			return
		}
		c, err := ts.SecureInbound(ctx, raw, "")
		done <- res{c, err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted = &countingConn{Conn: raw}
	client, err = tc.SecureOutbound(ctx, counted, idS)
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = r.c.Close() })
	return client, r.c, counted
}

// TestGatheredRecords: a write of many TLS records reaches TCP in one write(2), and every byte
// arrives in order, with small writes from another goroutine going out between the large ones.
func TestGatheredRecords(t *testing.T) {
	t.Parallel()
	client, server, counted := securePair(t)

	before := counted.writes.Load()
	big := make([]byte, 64<<10)
	_, _ = rand.Read(big)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(big))
		_, err := io.ReadFull(server, b)
		if err != nil {
			b = nil
		}
		got <- b
	}()
	if _, err := client.Write(big); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatal("a 64 KiB write arrived damaged")
	}
	if n := counted.writes.Load() - before; n != 1 {
		t.Fatalf("a 64 KiB write took %d writes to TCP, want 1", n)
	}

	// Large writes of distinct fills (several batches each) and small ones from another
	// goroutine: each write's bytes arrive whole, in the order of the writer's writes.
	const rounds = 20
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range rounds {
			if _, err := client.Write(bytes.Repeat([]byte{byte('A' + i)}, 200<<10)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for range rounds {
			if _, err := client.Write(bytes.Repeat([]byte{'z'}, 100)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	all := make([]byte, rounds*(200<<10+100))
	_ = server.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(server, all); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	next, smalls := byte('A'), 0
	for len(all) > 0 {
		switch all[0] {
		case 'z':
			if len(all) < 100 || !bytes.Equal(all[:100], bytes.Repeat([]byte{'z'}, 100)) {
				t.Fatal("a small write arrived split")
			}
			all, smalls = all[100:], smalls+1
		case next:
			if len(all) < 200<<10 || !bytes.Equal(all[:200<<10], bytes.Repeat([]byte{next}, 200<<10)) {
				t.Fatalf("large write %c arrived split or damaged", next)
			}
			all, next = all[200<<10:], next+1
		default:
			t.Fatalf("byte %q out of order (expected large write %c)", all[0], next)
		}
	}
	if smalls != rounds || next != 'A'+rounds {
		t.Fatalf("got %d small and %d large writes", smalls, next-'A')
	}
}
