// Package tlsrecords is libp2p's TLS 1.3 security transport with the records of one write
// gathered into one write to TCP.
//
// crypto/tls writes every record (at most 16 KiB of plaintext) to the connection on its own, so
// each 64 KiB frame yamux writes became five write(2) calls and five TCP segments, each pushed
// through the stack and acknowledged on its own, on both hosts (and at the start of a connection,
// where records are about 1 KiB, eleven). Here the records of one Write are gathered and written
// at once: the same bytes on the wire, a fifth of the system calls and segments. A node with this
// transport talks to one without it.
package tlsrecords

import (
	"context"
	"net"
	"sync"

	ci "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
)

// Transport is libp2p's TLS transport (libp2ptls.ID) with gathered records.
type Transport struct{ *libp2ptls.Transport }

var _ sec.SecureTransport = Transport{}

// New has the signature libp2p.Security injects: libp2p.Security(libp2ptls.ID, tlsrecords.New).
func New(id protocol.ID, key ci.PrivKey, muxers []tptu.StreamMuxer) (Transport, error) {
	t, err := libp2ptls.New(id, key, muxers)
	return Transport{t}, err
}

// SecureInbound runs the TLS handshake as a server (see libp2ptls.Transport).
func (s Transport) SecureInbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	raw := &gatherConn{Conn: insecure}
	c, err := s.Transport.SecureInbound(ctx, raw, p)
	if err != nil {
		return nil, err
	}
	return &batchedConn{SecureConn: c, raw: raw}, nil
}

// SecureOutbound runs the TLS handshake as a client (see libp2ptls.Transport).
func (s Transport) SecureOutbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	raw := &gatherConn{Conn: insecure}
	c, err := s.Transport.SecureOutbound(ctx, raw, p)
	if err != nil {
		return nil, err
	}
	return &batchedConn{SecureConn: c, raw: raw}, nil
}

// maxGather is the most a gathered write holds before it is written out: a loopback TCP
// segment, and about one yamux frame with its records' overhead.
const maxGather = 72 << 10

var gatherBufs = sync.Pool{New: func() any { b := make([]byte, 0, maxGather); return &b }}

// gatherConn is the connection under TLS. Between gather and flush, writes are appended to a
// buffer (borrowed for the batch, so an idle connection holds none) instead of being written.
// crypto/tls writes records under its own lock, in order; a record TLS writes on its own during
// a batch (a post-handshake message) joins the batch in that order.
type gatherConn struct {
	net.Conn
	mu  sync.Mutex
	buf *[]byte // non-nil during a batch
	err error   // the first failed write of the batch
}

func (c *gatherConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		return c.Conn.Write(p)
	}
	if c.err != nil {
		return 0, c.err
	}
	if len(*c.buf)+len(p) > maxGather {
		if c.err = c.writeOut(); c.err != nil {
			return 0, c.err
		}
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// writeOut writes the gathered bytes. Called with c.mu held.
func (c *gatherConn) writeOut() error {
	b := *c.buf
	*c.buf = b[:0]
	if len(b) == 0 {
		return nil
	}
	_, err := c.Conn.Write(b)
	return err
}

func (c *gatherConn) gather() {
	c.mu.Lock()
	c.buf, c.err = gatherBufs.Get().(*[]byte), nil
	c.mu.Unlock()
}

// flush writes what the batch gathered and ends it.
func (c *gatherConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.err
	if err == nil {
		err = c.writeOut()
	}
	*c.buf = (*c.buf)[:0]
	gatherBufs.Put(c.buf)
	c.buf = nil
	return err
}

// batchedConn is a TLS connection whose writes larger than one record go out in one batch.
type batchedConn struct {
	sec.SecureConn
	raw *gatherConn
	mu  sync.Mutex // one batch at a time
}

// maxRecord is TLS's largest record payload: a write no larger is one record anyway.
const maxRecord = 16 << 10

func (c *batchedConn) Write(p []byte) (int, error) {
	if len(p) <= maxRecord {
		return c.SecureConn.Write(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw.gather()
	n, err := c.SecureConn.Write(p)
	if ferr := c.raw.flush(); err == nil && ferr != nil {
		// Records gathered but not written: the connection is broken, as TLS's own failed
		// write would leave it.
		return 0, ferr
	}
	return n, err
}
