package names

import "testing"

func TestPathPrefix(t *testing.T) {
	for _, tt := range []struct {
		host, prefix string
		ok           bool
	}{
		{"docker.io", "docker.io", true},
		{"ghcr.io", "ghcr.io", true},
		{"127.0.0.1:5001", "127.0.0.1_5001", true},
		{"registry.example:443", "registry.example_443", true},
		{"localhost:5000", "localhost_5000", true},
		{"[::1]:5000", "", false},
		{"no/slash", "", false},
	} {
		p, ok := PathPrefix(tt.host)
		if p != tt.prefix || ok != tt.ok {
			t.Errorf("PathPrefix(%q) = %q, %t; want %q, %t", tt.host, p, ok, tt.prefix, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		if !ValidRepository(p + "/team/app") {
			t.Errorf("%q/team/app is not a valid repository name", p)
		}
		if h, ok := HostFromPathPrefix(p); !ok || h != tt.host {
			t.Errorf("HostFromPathPrefix(%q) = %q, %t; want %q", p, h, ok, tt.host)
		}
	}
	for _, c := range []string{"library", "team_a", "app"} {
		if h, ok := HostFromPathPrefix(c); ok {
			t.Errorf("HostFromPathPrefix(%q) = %q: a plain repository component taken for a host", c, h)
		}
	}
}
