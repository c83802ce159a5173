package admission

import (
	"errors"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

// Beyond loopback means any address that is not 127.0.0.0/8 or ::1: wildcards, routable
// addresses and names, alone or among loopback ones. A key or an allowlist makes any listener fine.
func TestCheckOpen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen []string
		key    bool
		allow  int
		open   bool
	}{
		{name: "ipv4 loopback", listen: []string{"/ip4/127.0.0.1/tcp/4001"}},
		{name: "other loopback", listen: []string{"/ip4/127.3.2.1/tcp/4001"}},
		{name: "ipv6 loopback", listen: []string{"/ip6/::1/tcp/4001"}},
		{name: "ipv4 wildcard", listen: []string{"/ip4/0.0.0.0/tcp/4001"}, open: true},
		{name: "ipv6 wildcard", listen: []string{"/ip6/::/tcp/4001"}, open: true},
		{name: "routable", listen: []string{"/ip4/10.0.0.5/tcp/4001"}, open: true},
		{name: "a name", listen: []string{"/dns4/localhost/tcp/4001"}, open: true},
		{name: "one of several", listen: []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.2/tcp/4001"}, open: true},
		{name: "wildcard with a key", listen: []string{"/ip4/0.0.0.0/tcp/4001"}, key: true},
		{name: "wildcard with an allowlist", listen: []string{"/ip6/::/tcp/4001"}, allow: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var addrs []ma.Multiaddr
			for _, s := range tc.listen {
				addrs = append(addrs, ma.StringCast(s))
			}
			err := CheckOpen(addrs, tc.key, tc.allow)
			if tc.open != errors.Is(err, ErrOpen) || (!tc.open && err != nil) {
				t.Fatalf("CheckOpen = %v, want open %v", err, tc.open)
			}
		})
	}
}
