package httpbound_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shoal-oci/shoal/internal/httpbound"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// serve runs h behind the bounds on 127.0.0.1 (capped at max connections) until the test ends.
func serve(t *testing.T, h http.Handler, stall time.Duration, max int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpbound.Server(h, stall, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(httpbound.Listener(ln, max, httpbound.Refusal(http.StatusServiceUnavailable, "application/json", []byte(`{"errors":[]}`))))
	}()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return ln.Addr().String()
}

func get(t *testing.T, url string) (*http.Response, []byte, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// A handler that never begins its answer: the client gets the late answer, and the handler's
// context ends with ErrFirstByteTimeout as its cause, so it stops its work.
func TestFirstByteAnswersForAHungHandler(t *testing.T) {
	cause := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Handler", "yes")
		<-r.Context().Done()
		cause <- context.Cause(r.Context())
		if _, err := w.Write([]byte("too late")); !errors.Is(err, httpbound.ErrFirstByteTimeout) {
			t.Errorf("a write after the bound = %v, want ErrFirstByteTimeout", err)
		}
	})
	late := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE"}]}`)
	}
	addr := serve(t, httpbound.FirstByte(h, 200*time.Millisecond, late), 0, 0)
	resp, body, err := get(t, "http://"+addr+"/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || string(body) != `{"errors":[{"code":"UNAVAILABLE"}]}` ||
		resp.Header.Get("X-Handler") != "" {
		t.Fatalf("got %d %q (X-Handler %q), want the late answer alone", resp.StatusCode, body, resp.Header.Get("X-Handler"))
	}
	if c := <-cause; !errors.Is(c, httpbound.ErrFirstByteTimeout) {
		t.Fatalf("the handler's context ended with %v", c)
	}
}

// A handler that begins in time keeps its answer, and its status and headers reach the client
// at once, before a body that is slow to come.
func TestFirstByteFlushesTheBeginning(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "4")
		w.WriteHeader(http.StatusOK)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "body")
	})
	late := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }
	addr := serve(t, httpbound.FirstByte(h, 300*time.Millisecond, late), 0, 0)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The headers arrived while the handler still holds its body back.
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	time.Sleep(500 * time.Millisecond) // past the bound: the answer is the handler's now
	close(release)
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "body" {
		t.Fatalf("body %q, %v", body, err)
	}
}

// A client that stops reading (here: reads a byte a second) loses its connection once the
// stall passes without progress, for a body written with Write and for a file sent with
// sendfile; one that reads steadily gets the whole body, however long it takes.
func TestProgressCutsStalledReaders(t *testing.T) {
	data, path := randomFile(t, 32<<20)
	ended := make(chan error, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "33554432")
		var err error
		if r.URL.Path == "/file" {
			f, ferr := os.Open(path)
			if ferr != nil {
				t.Error(ferr)
				return
			}
			defer f.Close()
			_, err = io.Copy(w, &io.LimitedReader{R: f, N: int64(len(data))})
		} else {
			_, err = io.Copy(w, bytes.NewReader(data))
		}
		ended <- err
	})
	addr := serve(t, h, 2*time.Second, 0)
	for _, p := range []string{"/write", "/file"} {
		t.Run("stalled"+p, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
			if _, err := io.WriteString(conn, "GET "+p+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReaderSize(conn, 16)
			var err2 error
			for range 30 { // a byte a second, until the server gives up (30 s at most)
				if _, err := br.ReadByte(); err != nil {
					t.Fatal(err)
				}
				select {
				case err2 = <-ended:
				case <-time.After(time.Second):
					continue
				}
				break
			}
			if err2 == nil {
				t.Fatal("the response to a reader taking a byte a second did not end with an error")
			}
			// What is left in the socket buffers is less than the body: the connection was cut.
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, _ := io.Copy(io.Discard, br)
			if n >= int64(len(data))-1 {
				t.Fatalf("the client still received %d bytes", n)
			}
		})
		t.Run("steady"+p, func(t *testing.T) {
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, ReadBufferSize: 4 << 10}}
			resp, err := c.Get("http://" + addr + p)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got bytes.Buffer
			buf := make([]byte, 2<<20)
			for {
				// 2 MiB every 150 ms: about 2.4 s in all, more than the stall bound, and no
				// pause near it.
				n, err := io.ReadFull(resp.Body, buf)
				got.Write(buf[:n])
				if err != nil {
					break
				}
				time.Sleep(150 * time.Millisecond)
			}
			if !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("a steady reader got %d of %d bytes", got.Len(), len(data))
			}
			if err := <-ended; err != nil {
				t.Fatalf("the handler's copy to a steady reader failed: %v", err)
			}
		})
	}
}

// Past the cap, a connection gets the refusal, a whole response, instead of waiting; a slot
// frees when a connection closes.
func TestListenerCap(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	addr := serve(t, h, 0, 2)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A request answered proves the connection holds a slot.
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("a connection under the cap: %v %v", resp, err)
		}
		resp.Body.Close()
		held = append(held, c)
	}
	resp, body, err := get(t, "http://"+addr+"/")
	if err != nil {
		t.Fatalf("past the cap: %v, want the refusal", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "errors") {
		t.Fatalf("past the cap: %d %q", resp.StatusCode, body)
	}
	held[0].Close()
	var ok bool
	for range 100 { // the server notices the close at its next read: bounded retries
		resp, body, err := get(t, "http://"+addr+"/")
		if err == nil && resp.StatusCode == http.StatusOK && string(body) == "ok" {
			ok = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !ok {
		t.Fatal("a closed connection's slot was not freed")
	}
}

// An uploader that stops sending its body (or trickles it) loses the request at the stall bound;
// one that keeps sending, slowly, is read to the end, and a handler that works on after the body
// (as a push commits) is not cut by a deadline left on the connection.
func TestProgressCutsStalledUploads(t *testing.T) {
	type result struct {
		n   int
		err error
	}
	got := make(chan result, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err == nil {
			time.Sleep(600 * time.Millisecond) // past the stall bound, after the body
			err = r.Context().Err()
		}
		got <- result{len(b), err}
		if err == nil {
			_, _ = io.WriteString(w, "ok")
		}
	})
	addr := serve(t, h, 300*time.Millisecond, 0)
	hold := make(chan struct{}) // a stalled uploader keeps its connection open until the test ends
	t.Cleanup(func() { close(hold) })
	send := func(t *testing.T, chunks int, gap time.Duration) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "PUT /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n"); err != nil {
			t.Error(err)
			return
		}
		for i := 0; i < chunks; i++ {
			time.Sleep(gap)
			if _, err := io.WriteString(conn, "x"); err != nil {
				return // cut by the server
			}
		}
		if chunks < 10 {
			<-hold
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, conn)
	}
	t.Run("stalled", func(t *testing.T) {
		go send(t, 2, 0) // two bytes of ten, then nothing
		select {
		case r := <-got:
			if r.err == nil || r.n != 2 {
				t.Fatalf("handler read %d bytes, err %v; want the body cut after 2 bytes", r.n, r.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a stalled upload was not cut")
		}
	})
	t.Run("steady", func(t *testing.T) {
		done := make(chan struct{})
		go func() { defer close(done); send(t, 10, 100*time.Millisecond) }()
		select {
		case r := <-got:
			if r.err != nil || r.n != 10 {
				t.Fatalf("handler read %d bytes, err %v; want the whole body and its context alive after it", r.n, r.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a steady upload did not end")
		}
		<-done
	})
}

// recordingListener hands out TCP connections that record whether net/http wrote a body through
// their ReadFrom, the path to sendfile(2).
type recordingListener struct {
	net.Listener
	readFrom chan struct{}
}

type recordingConn struct {
	*net.TCPConn
	readFrom chan struct{}
}

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return recordingConn{TCPConn: c.(*net.TCPConn), readFrom: l.readFrom}, nil
}

func (c recordingConn) ReadFrom(r io.Reader) (int64, error) {
	select {
	case c.readFrom <- struct{}{}:
	default:
	}
	return c.TCPConn.ReadFrom(r)
}

// A file served through the capped listener still reaches the connection's own ReadFrom, which
// sends it with sendfile; a wrapper that hid it made every blob a copy through user space.
func TestListenerKeepsSendfile(t *testing.T) {
	data, path := randomFile(t, 1<<20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := recordingListener{Listener: ln, readFrom: make(chan struct{}, 1)}
	srv := httpbound.Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Length", "1048576")
		_, _ = io.Copy(w, &io.LimitedReader{R: f, N: int64(len(data))}) // as the registry serves blobs
	}), 2*time.Second, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(httpbound.Listener(rec, 8, httpbound.Refusal(http.StatusServiceUnavailable, "application/json", []byte(`{"errors":[]}`))))
	}()
	defer func() { _ = srv.Close(); <-done }()
	resp, body, err := get(t, "http://"+ln.Addr().String()+"/")
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET: %v, %d bytes", err, len(body))
	}
	select {
	case <-rec.readFrom:
	default:
		t.Fatal("the body was not written through the connection's ReadFrom (no sendfile)")
	}
}

// randomFile writes n random bytes to a file in the test's directory.
func randomFile(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data, path
}
