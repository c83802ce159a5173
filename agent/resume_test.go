package agent_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// An origin whose connection breaks off mid-body is asked again for the rest, with Range: the
// client's pull succeeds, byte for byte, instead of failing.
func TestOriginCutMidBodyIsResumed(t *testing.T) {
	const size = 3 << 20
	data, d := randomBlob(t, size)
	var gets, ranges atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			w.WriteHeader(http.StatusOK) // the /v2/ check
			return
		}
		if rng := r.Header.Get("Range"); rng != "" {
			ranges.Add(1)
			var a int
			fmt.Sscanf(rng, "bytes=%d-", &a)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, size-1, size))
			w.Header().Set("Content-Length", fmt.Sprint(size-a))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[a:])
			return
		}
		gets.Add(1)
		// A third of the body, then the connection is cut.
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.Write(data[:size/3])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	n := startAgent(t, t.TempDir(), "http://"+ln.Addr().String())
	got, err := getBlob(t, n.host, "test/cut", d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("pull through an origin that cuts the body: %v (%d bytes)", err, len(got))
	}
	if gets.Load() != 1 || ranges.Load() < 1 {
		t.Fatalf("origin saw %d whole GETs and %d range GETs; want 1 and at least 1", gets.Load(), ranges.Load())
	}
}
