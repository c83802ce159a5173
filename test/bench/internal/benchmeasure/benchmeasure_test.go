package benchmeasure

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFetch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(strings.Repeat("x", 1000)))
	}))
	defer srv.Close()
	r, err := Fetch(context.Background(), srv.Client(), srv.URL, 1000)
	if err != nil || r.N != 1000 || r.TTFB <= 0 || r.Total < r.TTFB {
		t.Fatalf("Fetch = %+v, %v", r, err)
	}
	if _, err := Fetch(context.Background(), srv.Client(), srv.URL, 999); err == nil {
		t.Fatal("a body of the wrong size passed")
	}
}

func TestBaselines(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, plain := range []bool{false, true} {
		if d, err := TCPCopy(context.Background(), p, plain); err != nil || d <= 0 {
			t.Fatalf("TCPCopy(plain %v) = %v, %v", plain, d, err)
		}
	}
	pat := Pattern(1)
	d, _, f, err := WriteFloor(dir, 5<<20, pat)
	if err != nil || d <= 0 {
		t.Fatalf("WriteFloor = %v, %v", d, err)
	}
	if fi, err := os.Stat(f); err != nil || fi.Size() != 5<<20 {
		t.Fatalf("floor file: %v", err)
	}
	if HashFloor(5<<20, pat) <= 0 {
		t.Fatal("HashFloor took no time")
	}
	order := ""
	a := func() error { order += "a"; return nil }
	b := func() error { order += "b"; return nil }
	_ = InOrder(true, a, b)
	_ = InOrder(false, a, b)
	if order != "abba" {
		t.Fatalf("order %q", order)
	}
}
