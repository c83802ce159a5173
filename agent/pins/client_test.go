package pins_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/shoal-oci/shoal/agent/pins"
)

// TestClientKeepsTheTokenOffPlainHTTP: the admin client never sends its token over plain HTTP
// to a node beyond loopback, speaks HTTPS to such a node when given host:port, and plain HTTP on
// loopback. Every connection goes to a test server on 127.0.0.1, whatever address is named.
func TestClientKeepsTheTokenOffPlainHTTP(t *testing.T) {
	var tokens atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			tokens.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("[]"))
	})
	plain := httptest.NewServer(h)
	defer plain.Close()
	secure := httptest.NewTLSServer(h) // its certificate names example.com
	defer secure.Close()
	client := func(to *httptest.Server) *http.Client {
		tr := to.Client().Transport.(*http.Transport).Clone()
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, to.Listener.Addr().String())
		}
		return &http.Client{Transport: tr}
	}
	for _, tc := range []struct {
		name, addr, token string
		server            *httptest.Server
		wantBase          string
		refused           bool
	}{
		{name: "token over plain HTTP beyond loopback", addr: "http://seed.example:5000", token: "s3cret", server: plain, wantBase: "http://seed.example:5000", refused: true},
		{name: "token over plain HTTP to an address beyond loopback", addr: "http://10.0.0.9:5000", token: "s3cret", server: plain, wantBase: "http://10.0.0.9:5000", refused: true},
		{name: "host:port beyond loopback is HTTPS", addr: "example.com:5000", token: "s3cret", server: secure, wantBase: "https://example.com:5000"},
		{name: "token over plain HTTP on loopback", addr: "127.0.0.1:5000", token: "s3cret", server: plain, wantBase: "http://127.0.0.1:5000"},
		{name: "localhost is loopback", addr: "localhost:5000", token: "s3cret", server: plain, wantBase: "http://localhost:5000"},
		{name: "no token over plain HTTP", addr: "http://seed.example:5000", server: plain, wantBase: "http://seed.example:5000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tokens.Load()
			c := pins.NewClient(tc.addr, tc.token)
			c.HTTP = client(tc.server)
			if c.Base != tc.wantBase {
				t.Errorf("Base %q, want %q", c.Base, tc.wantBase)
			}
			_, err := c.Pins(context.Background())
			sent := tokens.Load() - before
			switch {
			case tc.refused && (err == nil || !strings.Contains(err.Error(), "plain HTTP")):
				t.Errorf("err %v, want the refusal to send the token over plain HTTP", err)
			case tc.refused && sent != 0:
				t.Errorf("the token reached the server %d times", sent)
			case !tc.refused && err != nil:
				t.Errorf("err %v", err)
			case !tc.refused && tc.token != "" && sent != 1:
				t.Errorf("the token reached the server %d times, want once", sent)
			}
		})
	}
}
