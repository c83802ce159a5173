package bootaddr

import (
	"errors"
	"strings"
	"testing"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

func TestParse(t *testing.T) {
	t.Parallel()
	const id = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
	for _, tc := range []struct {
		name    string
		in      string
		check   func(Entry) bool
		wantErr string
	}{
		{name: "full multiaddr", in: "/ip4/10.0.0.1/tcp/4001/p2p/" + id,
			check: func(e Entry) bool { return e.Peer.ID.String() == id && len(e.Peer.Addrs) == 1 }},
		{name: "ip6 full", in: "/ip6/::1/tcp/4001/p2p/" + id,
			check: func(e Entry) bool { return e.Peer.ID.String() == id }},
		{name: "dns4 full", in: "/dns4/seed.example/tcp/4001/p2p/" + id,
			check: func(e Entry) bool { return e.Peer.ID.String() == id }},
		{name: "without ID", in: "/ip4/10.0.0.1/tcp/4001",
			check: func(e Entry) bool { return e.Addr.String() == "/ip4/10.0.0.1/tcp/4001" && e.Peer.ID == "" }},
		{name: "dns without ID", in: "/dns/seed.example/tcp/4001",
			check: func(e Entry) bool { return e.Addr != nil }},
		{name: "dns name", in: "dns:shoal-headless.default.svc:4001",
			check: func(e Entry) bool { return e.DNSName == "shoal-headless.default.svc" && e.Port == 4001 }},
		{name: "surrounding blanks", in: "  dns:localhost:4001 ",
			check: func(e Entry) bool { return e.DNSName == "localhost" }},
		{name: "empty", in: "", wantErr: "want a multiaddr"},
		{name: "host:port", in: "10.0.0.1:4001", wantErr: "want a multiaddr"},
		{name: "quic", in: "/ip4/10.0.0.1/udp/4001/quic-v1/p2p/" + id, wantErr: "not a TCP address"},
		{name: "udp without ID", in: "/ip4/10.0.0.1/udp/4001", wantErr: "not a TCP address"},
		{name: "no port", in: "/ip4/10.0.0.1", wantErr: "not a TCP address"},
		{name: "ID only", in: "/p2p/" + id, wantErr: "needs an address"},
		{name: "bad multiaddr", in: "/ip4/300.0.0.1/tcp/1", wantErr: "300.0.0.1"},
		{name: "bad peer ID", in: "/ip4/10.0.0.1/tcp/4001/p2p/QmNope", wantErr: "bootstrap entry"},
		{name: "dns no port", in: "dns:seed", wantErr: "dns:<name>:<port>"},
		{name: "dns bad port", in: "dns:seed:http", wantErr: "port"},
		{name: "dns port zero", in: "dns:seed:0", wantErr: "port"},
		{name: "dns empty name", in: "dns::4001", wantErr: "empty DNS name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := Parse(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("Parse(%q) error = %v; want ErrInvalid mentioning %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if !tc.check(e) {
				t.Errorf("Parse(%q) = %+v", tc.in, e)
			}
			// String gives back an entry that parses to the same thing.
			again, err := Parse(e.String())
			if err != nil || again.String() != e.String() {
				t.Errorf("String() = %q does not round-trip: %v", e.String(), err)
			}
		})
	}
}
