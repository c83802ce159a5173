package p2p

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/shoal-oci/shoal/p2p/bootaddr"
)

func TestCloseStopsRun(t *testing.T) {
	t.Parallel()
	// A node that keeps failing to bootstrap is in its retry loop when Close comes.
	n := newTestNode(t, Config{Bootstrap: []string{tcpAddr(freePort(t))}})
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after Close = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return after Close")
	}
	t.Logf("Close took %v", time.Since(start))
	if err := n.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := n.Provide(context.Background(), randomDigest(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("Provide after Close = %v, want ErrClosed", err)
	}
	if _, err := n.FindProviders(context.Background(), randomDigest(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("FindProviders after Close = %v, want ErrClosed", err)
	}
	n.StopProviding(randomDigest(t)) // no panic
}

func TestAddrsAreBootstrapEntries(t *testing.T) {
	t.Parallel()
	n := newTestNode(t, Config{})
	addrs := n.Addrs()
	if len(addrs) == 0 {
		t.Fatal("no addresses")
	}
	for _, a := range addrs {
		e, err := bootaddr.Parse(a)
		if err != nil || e.Peer.ID != n.ID() {
			t.Errorf("Addrs() entry %q parses to %+v, %v", a, e, err)
		}
	}
}

func TestPreferNonLoopback(t *testing.T) {
	t.Parallel()
	parse := func(ss ...string) []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, s := range ss {
			out = append(out, ma.StringCast(s))
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		in, want []ma.Multiaddr
	}{
		{name: "mixed", in: parse("/ip4/127.0.0.1/tcp/1", "/ip4/10.0.0.5/tcp/1", "/ip6/::1/tcp/1"), want: parse("/ip4/10.0.0.5/tcp/1")},
		{name: "loopback only", in: parse("/ip4/127.0.0.1/tcp/1", "/ip6/::1/tcp/1"), want: parse("/ip4/127.0.0.1/tcp/1", "/ip6/::1/tcp/1")},
		{name: "none", in: nil, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := preferNonLoopback(tc.in)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if !got[i].Equal(tc.want[i]) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestNewListenFailure: a busy port fails New cleanly (the package's leak check covers what New built).
func TestNewListenFailure(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	n, err := New(Config{DataDir: t.TempDir(), ListenAddrs: []string{tcpAddr(port)}})
	if err == nil {
		n.Close()
		t.Fatal("New succeeded on a busy port")
	}
	t.Logf("New on a busy port: %v", err)
}
