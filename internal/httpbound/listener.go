package httpbound

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Listener caps the connections open at once on ln at max. A connection past the cap is not left
// waiting in the accept queue, where a client would hang until a slot frees (which a long
// download may not do for minutes): its request is answered refusal, a whole HTTP response (a
// 503 that sends a registry client to its next host), and it is closed. Refusals run at most
// maxRefusing at a time, a second each (a connection that sends no request in that time is just
// closed); past that a connection is closed at once. max <= 0 means no cap.
func Listener(ln net.Listener, max int, refusal []byte) net.Listener {
	if max <= 0 {
		return ln
	}
	return &capListener{Listener: ln, slots: make(chan struct{}, max), refusing: make(chan struct{}, maxRefusing),
		refusal: refusal}
}

// maxRefusing bounds the goroutines answering connections past the cap.
const maxRefusing = 64

// refuseTime bounds writing a refusal and reading what the client sent meanwhile (reading it
// lets the client see the answer rather than a reset).
const refuseTime = time.Second

type capListener struct {
	net.Listener
	slots    chan struct{}
	refusing chan struct{}
	refusal  []byte
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &capConn{Conn: c, release: sync.OnceFunc(func() { <-l.slots })}, nil
		default:
		}
		select {
		case l.refusing <- struct{}{}:
			go func() {
				defer func() { <-l.refusing }()
				refuse(c, l.refusal)
			}()
		default:
			_ = c.Close()
		}
	}
}

func refuse(c net.Conn, refusal []byte) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(refuseTime))
	// The refusal answers the client's request: an answer that came before the request would
	// be an error to an HTTP client (Go's reports an unsolicited response), not a 503. A
	// connection that sends no request in time is closed.
	br := bufio.NewReaderSize(c, 4<<10)
	for read := 0; ; {
		line, err := br.ReadSlice('\n')
		read += len(line)
		if err == bufio.ErrBufferFull && read < 64<<10 {
			continue
		}
		if err != nil {
			return
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // the end of the request's headers
		}
	}
	if _, err := c.Write(refusal); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.CopyN(io.Discard, c, 64<<10)
}

type capConn struct {
	net.Conn
	release func()
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// ReadFrom keeps the accepted connection's own ReadFrom, through which net/http serves a file
// with sendfile(2): without it every blob would be copied through user space.
func (c *capConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite keeps the half-close net/http uses to let a client read a final answer.
func (c *capConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Refusal is a whole HTTP/1.1 response with the given status, content type and body, closing
// the connection: what Listener answers past its cap.
func Refusal(status int, contentType string, body []byte) []byte {
	if status < 100 || status > 999 {
		panic(errors.New("httpbound: status out of range"))
	}
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s",
		statusLine(status), contentType, strconv.Itoa(len(body)), body)
}

func statusLine(status int) string {
	return strconv.Itoa(status) + " " + http.StatusText(status)
}
