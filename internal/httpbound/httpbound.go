// Package httpbound bounds what an HTTP client can hold of a node: how many connections it keeps
// open (Listener), how long a response may stand still while its reader does not read
// (Progress), and how long a request may wait for the first byte of its answer (FirstByte).
// A container runtime waits on a registry mirror without a timeout of its own, so a node must
// answer, or fail in a way that sends the runtime to its next host, within a bound it states.
package httpbound

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"
)

// Defaults for Server, Progress and Listener.
const (
	// DefaultReadHeaderTimeout bounds reading a request's headers, and how long a connection
	// that sent nothing is kept.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout bounds how long a keep-alive connection waits for its next request.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultStallTimeout is how long a response write may block on a reader that takes no
	// bytes before the connection is closed.
	DefaultStallTimeout = 30 * time.Second
)

// Server is an http.Server for h with the bounds every Shoal listener has: headers within
// DefaultReadHeaderTimeout, idle keep-alive connections closed after DefaultIdleTimeout, and
// response writes that fail once stall passes without progress (Progress). Request bodies are
// not bounded in time here: only the push API reads them, and its uploads are as long as a blob.
func Server(h http.Handler, stall time.Duration, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Handler:           Progress(h, stall),
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
	if log != nil {
		srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	}
	return srv
}

// Progress gives every write of a response, and every read of a request body (stallBody), stall
// to complete, counted from the write (or the chunk of a file sent with sendfile): a reader that
// takes bytes keeps its response going for as long as the body lasts, while one that stops taking them (or reads a byte a second) holds the
// connection at most stall past its last progress. Writes extend the deadline; waiting between
// writes (for bytes still being fetched) is not held against the reader. stall <= 0 means
// DefaultStallTimeout.
func Progress(h http.Handler, stall time.Duration) http.Handler {
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		pw := &progressWriter{ResponseWriter: w, rc: rc, stall: stall}
		body := r.Body != nil && r.Body != http.NoBody
		if body {
			r.Body = &stallBody{ReadCloser: r.Body, rc: rc, stall: stall}
		}
		h.ServeHTTP(pw, r)
		if body {
			_ = rc.SetReadDeadline(time.Time{})
		}
		// net/http flushes what is buffered after the handler returns: give it the same time.
		pw.extend()
	})
}

// stallBody bounds a request body the way progressWriter bounds a response: each read gets stall
// to return, so an uploader that sends bytes keeps its request going for as long as the body
// lasts, while one that stops (or sends a byte a second, as a slow-loris does to hold an upload
// slot) gets an error at most stall past its last progress. The deadline is cleared at the end of
// the body: net/http keeps reading the connection in the background while the handler finishes
// (committing an upload), and a deadline left behind there would cancel the request.
type stallBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	stall time.Duration
}

func (b *stallBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.stall))
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// sendfileChunk is how much of a file goes out under one write deadline: a reader must take it
// within the stall timeout (about 35 KB/s at the default) to keep the connection.
const sendfileChunk = 1 << 20

type progressWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (w *progressWriter) extend() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.stall)) }

func (w *progressWriter) WriteHeader(code int) { w.extend(); w.ResponseWriter.WriteHeader(code) }

func (w *progressWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		// A large write is cut so that a reader slower than sendfileChunk per stall fails it.
		c := min(len(p), sendfileChunk)
		w.extend()
		m, err := w.ResponseWriter.Write(p[:c])
		n += m
		if err != nil {
			return n, err
		}
		p = p[c:]
	}
	return n, nil
}

// ReadFrom keeps net/http's sendfile path for a file (an *os.File, or an *io.LimitedReader over
// one, which is how committed blobs are served), one chunk per deadline.
func (w *progressWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{w}, src)
	}
	var f io.Reader = src
	left := int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		f, left = lr.R, lr.N
	}
	if _, ok := f.(*os.File); !ok {
		return io.Copy(struct{ io.Writer }{w}, src)
	}
	var total int64
	for left != 0 {
		c := int64(sendfileChunk)
		if left > 0 {
			c = min(c, left)
		}
		w.extend()
		n, err := rf.ReadFrom(&io.LimitedReader{R: f, N: c})
		total += n
		if left > 0 {
			left -= n
		}
		if lr, ok := src.(*io.LimitedReader); ok {
			lr.N = left
		}
		if err != nil {
			return total, err
		}
		if n < c {
			break // the end of the file
		}
	}
	return total, nil
}

func (w *progressWriter) Flush() { w.extend(); _ = w.rc.Flush() }

// Unwrap lets http.ResponseController reach the connection.
func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ErrFirstByteTimeout is what a handler's writes return once FirstByte answered for it.
var ErrFirstByteTimeout = errors.New("httpbound: the first-byte bound passed; the request was answered for the handler")
