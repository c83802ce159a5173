package benchorigin

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/bench/internal/benchblob"
)

func get(t *testing.T, url string) (int, int64) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, n
}

// The origin serves and counts blob files, refuses them while blocked, and comes back on a new
// port after a stop.
func TestOrigin(t *testing.T) {
	dir := t.TempDir()
	d, err := benchblob.Make(dir, 100<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	o, err := Start(dir, Pacing{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	u := o.URL() + "/v2/bench/x/blobs/" + d
	if code, n := get(t, u); code != http.StatusOK || n != 100<<10 {
		t.Fatalf("GET: %d, %d bytes", code, n)
	}
	// The handler counts the body once it has written it, which may be just after the client
	// read its last byte: wait for the count, briefly.
	c := o.Counts()
	for deadline := time.Now().Add(5 * time.Second); c.BlobBytes < 100<<10 && time.Now().Before(deadline); c = o.Counts() {
		time.Sleep(5 * time.Millisecond)
	}
	if o.BlobGets(d) != 1 || c.BlobBytes != 100<<10 || c.Bytes != c.BlobBytes {
		t.Fatalf("counts %+v, blob GETs %d", c, o.BlobGets(d))
	}
	o.Block(true)
	if code, _ := get(t, u); code != http.StatusServiceUnavailable || o.BlockedRequests() != 1 || o.BlobGets(d) != 1 {
		t.Fatalf("blocked GET: %d, refused %d", code, o.BlockedRequests())
	}
	o.Block(false)

	old := o.URL()
	o.Close()
	if _, err := http.Get(u); err == nil {
		t.Fatal("a stopped origin answered")
	}
	if err := o.Start(); err != nil {
		t.Fatal(err)
	}
	if o.URL() == old {
		t.Fatal("restarted on the same address")
	}
	get(t, o.URL()+"/v2/bench/x/blobs/"+d)
	since := o.Counts().Since(c)
	for deadline := time.Now().Add(5 * time.Second); since.BlobBytes < 100<<10 && time.Now().Before(deadline); since = o.Counts().Since(c) {
		time.Sleep(5 * time.Millisecond) // counted just after the body, as above
	}
	if since.BlobGets[d] != 1 || since.BlobBytes != 100<<10 {
		t.Fatalf("since: %+v", since)
	}
}

func TestPacing(t *testing.T) {
	dir := t.TempDir()
	d, err := benchblob.Make(dir, 200<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []Pacing{{Egress: 1 << 20}, {EachResponse: 1 << 20}} {
		o, err := Start(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		code, n := get(t, o.URL()+"/v2/bench/x/blobs/"+d)
		took := time.Since(start)
		o.Close()
		// 200 KiB at 1 MiB/s: about 0.2 s (Egress starts with a 256 KiB burst, so it may be quick).
		if code != http.StatusOK || n != 200<<10 || (p.EachResponse > 0 && took < 150*time.Millisecond) {
			t.Fatalf("%+v: %d, %d bytes in %s", p, code, n, took)
		}
		if !strings.HasPrefix(o.URL(), "http://127.0.0.1:") {
			t.Fatalf("URL %s", o.URL())
		}
	}
}
