package httpbound

import (
	"context"
	"io"
	"maps"
	"net/http"
	"sync"
	"time"
)

// FirstByte answers a request for h when h has not begun its answer within d: late writes the
// answer (an error that sends the client elsewhere), the request's context is cancelled with
// ErrFirstByteTimeout as its cause, and what h writes afterwards is dropped. Once h begins, its
// status and headers are flushed at once, so that the client has its first byte then, even if
// the body has yet to arrive; from there the body's own bounds (Progress, the sources') apply.
// d <= 0 turns the bound off.
//
// h gets a header map of its own until it begins, because late writes the real one from another
// goroutine.
func FirstByte(h http.Handler, d time.Duration, late func(w http.ResponseWriter, r *http.Request)) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		fw := &firstByteWriter{w: w, header: w.Header().Clone()}
		timer := time.AfterFunc(d, func() {
			fw.mu.Lock()
			defer fw.mu.Unlock()
			if fw.begun || fw.done {
				return
			}
			fw.late = true
			late(w, r)
			_ = http.NewResponseController(w).Flush()
			cancel(ErrFirstByteTimeout)
		})
		defer timer.Stop()
		h.ServeHTTP(fw, r.WithContext(ctx))
		fw.mu.Lock()
		fw.done = true
		fw.mu.Unlock()
	})
}

type firstByteWriter struct {
	w      http.ResponseWriter
	header http.Header

	mu    sync.Mutex
	begun bool // h's status went out: from here h owns w
	late  bool // the bound passed first: h's writes are dropped
	done  bool
}

func (fw *firstByteWriter) Header() http.Header { return fw.header }

// begin sends h's status (200 when h wrote a body first) and headers, and flushes them. It
// reports whether h still owns the response.
func (fw *firstByteWriter) begin(code int) bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.late {
		return false
	}
	if fw.begun {
		return true
	}
	dst := fw.w.Header()
	clear(dst)
	maps.Copy(dst, fw.header)
	fw.w.WriteHeader(code)
	if code < 200 {
		return true // an informational answer: the real one is still to come
	}
	fw.begun = true
	_ = http.NewResponseController(fw.w).Flush()
	return true
}

func (fw *firstByteWriter) WriteHeader(code int) { fw.begin(code) }

func (fw *firstByteWriter) Write(p []byte) (int, error) {
	if !fw.begin(http.StatusOK) {
		return 0, ErrFirstByteTimeout
	}
	return fw.w.Write(p)
}

// ReadFrom keeps sendfile for files.
func (fw *firstByteWriter) ReadFrom(src io.Reader) (int64, error) {
	if !fw.begin(http.StatusOK) {
		return 0, ErrFirstByteTimeout
	}
	if rf, ok := fw.w.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(fw.w, src)
}

func (fw *firstByteWriter) Flush() {
	if fw.begin(http.StatusOK) {
		_ = http.NewResponseController(fw.w).Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (deadlines), once h owns it.
func (fw *firstByteWriter) Unwrap() http.ResponseWriter { return fw.w }
