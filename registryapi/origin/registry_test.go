package origin

import (
	"errors"
	"testing"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

func TestParseRegistry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, url, host, str string
		err                  error
	}{
		{name: "docker hub", url: "https://registry-1.docker.io", host: "registry-1.docker.io", str: "https://registry-1.docker.io"},
		{name: "http with port", url: "http://127.0.0.1:5001", host: "127.0.0.1:5001", str: "http://127.0.0.1:5001"},
		{name: "trailing slash", url: "https://ghcr.io/", host: "ghcr.io", str: "https://ghcr.io"},
		{name: "upper case", url: "HTTPS://GHCR.IO:443", host: "ghcr.io:443", str: "https://ghcr.io:443"},
		{name: "docker.io means index.docker.io", url: "https://docker.io", host: "index.docker.io", str: "https://index.docker.io"},
		{name: "ipv6", url: "http://[::1]:5000", host: "[::1]:5000", str: "http://[::1]:5000"},
		{name: "no scheme", url: "registry-1.docker.io", err: errdefs.ErrInvalid},
		{name: "host:port without scheme", url: "127.0.0.1:5001", err: errdefs.ErrInvalid},
		{name: "ftp", url: "ftp://example.com", err: errdefs.ErrInvalid},
		{name: "path", url: "https://example.com/v2", err: errdefs.ErrInvalid},
		{name: "query", url: "https://example.com?x=1", err: errdefs.ErrInvalid},
		{name: "empty query", url: "https://example.com?", err: errdefs.ErrInvalid},
		{name: "fragment", url: "https://example.com#x", err: errdefs.ErrInvalid},
		{name: "userinfo", url: "https://user:pass@example.com", err: errdefs.ErrInvalid},
		{name: "no host", url: "https://", err: errdefs.ErrInvalid},
		{name: "bad port", url: "https://example.com:port", err: errdefs.ErrInvalid},
		{name: "empty", url: "", err: errdefs.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseRegistry(tc.url)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ParseRegistry(%q) = %v, %v; want error %v", tc.url, r, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRegistry(%q): %v", tc.url, err)
			}
			if r.Host() != tc.host || r.String() != tc.str {
				t.Errorf("ParseRegistry(%q) = host %q, url %q; want %q, %q", tc.url, r.Host(), r.String(), tc.host, tc.str)
			}
		})
	}
}

func TestNewSet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		urls []string
		err  error
	}{
		{name: "one", urls: []string{"https://ghcr.io"}},
		{name: "several", urls: []string{"https://registry-1.docker.io", "https://ghcr.io", "http://127.0.0.1:5001"}},
		{name: "same host other port", urls: []string{"http://127.0.0.1:5001", "http://127.0.0.1:5002"}},
		{name: "none", urls: nil, err: errdefs.ErrInvalid},
		{name: "duplicate", urls: []string{"https://ghcr.io", "https://ghcr.io/"}, err: errdefs.ErrInvalid},
		{name: "duplicate other case", urls: []string{"https://ghcr.io", "https://GHCR.io"}, err: errdefs.ErrInvalid},
		{name: "duplicate other scheme", urls: []string{"https://ghcr.io", "http://ghcr.io"}, err: errdefs.ErrInvalid},
		{name: "two docker hub aliases", urls: []string{"https://registry-1.docker.io", "https://index.docker.io"}, err: errdefs.ErrInvalid},
		{name: "bad url", urls: []string{"https://ghcr.io", "quay.io"}, err: errdefs.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := NewSet(tc.urls)
			if !errors.Is(err, tc.err) {
				t.Fatalf("NewSet(%q) error = %v, want %v", tc.urls, err, tc.err)
			}
			if err == nil && len(s.Registries()) != len(tc.urls) {
				t.Errorf("NewSet(%q) has %d registries", tc.urls, len(s.Registries()))
			}
		})
	}
}

func TestSelect(t *testing.T) {
	t.Parallel()
	s, err := NewSet([]string{"http://127.0.0.1:5001", "https://registry-1.docker.io", "https://ghcr.io"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ns, want string
		err            error
	}{
		{name: "empty is first", ns: "", want: "http://127.0.0.1:5001"},
		{name: "host and port", ns: "127.0.0.1:5001", want: "http://127.0.0.1:5001"},
		{name: "docker.io", ns: "docker.io", want: "https://registry-1.docker.io"},
		{name: "index.docker.io", ns: "index.docker.io", want: "https://registry-1.docker.io"},
		{name: "registry-1.docker.io", ns: "registry-1.docker.io", want: "https://registry-1.docker.io"},
		{name: "docker hub upper case", ns: "Docker.IO", want: "https://registry-1.docker.io"},
		{name: "upper case", ns: "GHCR.io", want: "https://ghcr.io"},
		{name: "other port", ns: "127.0.0.1:5002", err: errdefs.ErrNotConfigured},
		{name: "no port", ns: "127.0.0.1", err: errdefs.ErrNotConfigured},
		{name: "unconfigured", ns: "quay.io", err: errdefs.ErrNotConfigured},
		{name: "suffix is not a match", ns: "evil-ghcr.io", err: errdefs.ErrNotConfigured},
		{name: "url is not a host", ns: "https://ghcr.io", err: errdefs.ErrNotConfigured},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := s.Select(tc.ns)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Select(%q) error = %v, want %v", tc.ns, err, tc.err)
			}
			if err == nil && r.String() != tc.want {
				t.Errorf("Select(%q) = %s, want %s", tc.ns, r, tc.want)
			}
		})
	}

	hub, err := NewSet([]string{"https://docker.io"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := hub.Select("registry-1.docker.io"); err != nil || r.Host() != "index.docker.io" {
		t.Errorf("Select(registry-1.docker.io) with docker.io configured = %v, %v", r, err)
	}
}

func TestParseUpstream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, spec, regName, host, remote, str string
		err                                    error
	}{
		{name: "plain url", spec: "https://ghcr.io", regName: "ghcr.io", host: "ghcr.io", remote: "a/b", str: "https://ghcr.io"},
		{name: "alias", spec: "docker.io=https://harbor.corp", regName: "docker.io", host: "harbor.corp", remote: "a/b", str: "docker.io=https://harbor.corp"},
		{name: "alias with prefix", spec: "docker.io=https://harbor.corp/dockerhub-proxy/", regName: "docker.io", host: "harbor.corp",
			remote: "dockerhub-proxy/a/b", str: "docker.io=https://harbor.corp/dockerhub-proxy"},
		{name: "alias with nested prefix", spec: "GHCR.io=http://127.0.0.1:5001/cache/ghcr", regName: "ghcr.io", host: "127.0.0.1:5001",
			remote: "cache/ghcr/a/b", str: "ghcr.io=http://127.0.0.1:5001/cache/ghcr"},
		{name: "alias with port", spec: "localhost:5000=http://127.0.0.1:5001", regName: "localhost:5000", host: "127.0.0.1:5001", remote: "a/b",
			str: "localhost:5000=http://127.0.0.1:5001"},
		{name: "path without alias", spec: "https://harbor.corp/proxy", err: errdefs.ErrInvalid},
		{name: "name is a url", spec: "https://docker.io=https://harbor.corp", err: errdefs.ErrInvalid},
		{name: "empty name", spec: "=https://harbor.corp", err: errdefs.ErrInvalid},
		{name: "no url", spec: "docker.io=", err: errdefs.ErrInvalid},
		{name: "url without scheme", spec: "docker.io=harbor.corp", err: errdefs.ErrInvalid},
		{name: "upper-case prefix", spec: "docker.io=https://harbor.corp/Proxy", err: errdefs.ErrInvalid},
		{name: "escaped prefix", spec: "docker.io=https://harbor.corp/a%2Fb", err: errdefs.ErrInvalid},
		{name: "dot-dot prefix", spec: "docker.io=https://harbor.corp/../x", err: errdefs.ErrInvalid},
		{name: "query", spec: "docker.io=https://harbor.corp/p?x=1", err: errdefs.ErrInvalid},
		{name: "credentials", spec: "docker.io=https://u:p@harbor.corp", err: errdefs.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseUpstream(tc.spec)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ParseUpstream(%q) = %v, %v; want error %v", tc.spec, r, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseUpstream(%q): %v", tc.spec, err)
			}
			if r.Name() != tc.regName || r.Host() != tc.host || r.remote("a/b") != tc.remote || r.String() != tc.str {
				t.Errorf("ParseUpstream(%q) = name %q, host %q, remote %q, string %q; want %q, %q, %q, %q", tc.spec,
					r.Name(), r.Host(), r.remote("a/b"), r.String(), tc.regName, tc.host, tc.remote, tc.str)
			}
		})
	}
}

// An alias answers to its name (and, for Docker Hub, every spelling of it), never to its URL's
// host, and two entries with one name are refused.
func TestSelectAlias(t *testing.T) {
	t.Parallel()
	s, err := NewSet([]string{"http://127.0.0.1:5001", "docker.io=https://harbor.corp/hub", "ghcr.io=https://harbor.corp/ghcr"})
	if err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]string{
		"docker.io":            "docker.io=https://harbor.corp/hub",
		"index.docker.io":      "docker.io=https://harbor.corp/hub",
		"registry-1.docker.io": "docker.io=https://harbor.corp/hub",
		"ghcr.io":              "ghcr.io=https://harbor.corp/ghcr",
	} {
		if r, err := s.Select(ns); err != nil || r.String() != want {
			t.Errorf("Select(%q) = %v, %v; want %s", ns, r, err, want)
		}
	}
	if r, err := s.Select("harbor.corp"); !errors.Is(err, errdefs.ErrNotConfigured) {
		t.Errorf("Select(the alias's host) = %v, %v; want ErrNotConfigured", r, err)
	}
	for _, urls := range [][]string{
		{"https://registry-1.docker.io", "docker.io=https://harbor.corp"},
		{"index.docker.io=https://a.corp", "docker.io=https://harbor.corp"},
	} {
		if _, err := NewSet(urls); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("NewSet(%q) = %v, want ErrInvalid (one name twice)", urls, err)
		}
	}
}
