package reference

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

const d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Ref
		key  string // String(), the pin key
	}{
		{"bare name keeps no registry", "alpine", Ref{Repo: "alpine", Tag: "latest"}, "alpine:latest"},
		{"bare name with namespace", "team/app:v1", Ref{Repo: "team/app", Tag: "v1"}, "team/app:v1"},
		{"docker.io is kept as written", "docker.io/alpine:3.20", Ref{Registry: "docker.io", Repo: "library/alpine", Tag: "3.20"}, "docker.io/library/alpine:3.20"},
		{"index.docker.io gets library", "index.docker.io/alpine", Ref{Registry: "index.docker.io", Repo: "library/alpine", Tag: "latest"}, "index.docker.io/library/alpine:latest"},
		{"registry-1.docker.io gets library", "registry-1.docker.io/alpine", Ref{Registry: "registry-1.docker.io", Repo: "library/alpine", Tag: "latest"}, "registry-1.docker.io/library/alpine:latest"},
		{"Docker Hub with namespace", "docker.io/team/app", Ref{Registry: "docker.io", Repo: "team/app", Tag: "latest"}, "docker.io/team/app:latest"},
		{"other registry gets no library", "registry.example/app", Ref{Registry: "registry.example", Repo: "app", Tag: "latest"}, "registry.example/app:latest"},
		{"IP and port", "127.0.0.1:5000/test/app:v1", Ref{Registry: "127.0.0.1:5000", Repo: "test/app", Tag: "v1"}, "127.0.0.1:5000/test/app:v1"},
		{"localhost and port", "localhost:5000/x", Ref{Registry: "localhost:5000", Repo: "x", Tag: "latest"}, "localhost:5000/x:latest"},
		{"localhost alone is a registry", "localhost/app@" + d, Ref{Registry: "localhost", Repo: "app", Digest: d}, "localhost/app@" + d},
		{"IPv6 and port", "[::1]:5000/app:v1", Ref{Registry: "[::1]:5000", Repo: "app", Tag: "v1"}, "[::1]:5000/app:v1"},
		{"port and tag", "registry.example:443/app:1.0.0", Ref{Registry: "registry.example:443", Repo: "app", Tag: "1.0.0"}, "registry.example:443/app:1.0.0"},
		{"digest and tag keeps both", "registry.example/a/b/c:t@" + d, Ref{Registry: "registry.example", Repo: "a/b/c", Tag: "t", Digest: d}, "registry.example/a/b/c@" + d},
		{"Docker Hub digest and tag", "docker.io/alpine:3.20@" + d, Ref{Registry: "docker.io", Repo: "library/alpine", Tag: "3.20", Digest: d}, "docker.io/library/alpine@" + d},
		{"digest only has no tag", "app@" + d, Ref{Repo: "app", Digest: d}, "app@" + d},
		{"sha512 digest", "app@sha512:" + strings.Repeat("ab", 64), Ref{Repo: "app", Digest: digest.Digest("sha512:" + strings.Repeat("ab", 64))}, "app@sha512:" + strings.Repeat("ab", 64)},
		{"first component without dot or colon is a namespace", "team/app", Ref{Repo: "team/app", Tag: "latest"}, "team/app:latest"},
		{"a name that looks like a host without a path", "a.b:v1", Ref{Repo: "a.b", Tag: "v1"}, "a.b:v1"},
		{"host case is kept", "Registry.Example/app", Ref{Registry: "Registry.Example", Repo: "app", Tag: "latest"}, "Registry.Example/app:latest"},
		{"upper-case tag", "app:V1_x.y-z", Ref{Repo: "app", Tag: "V1_x.y-z"}, "app:V1_x.y-z"},
		{"separators", "a/b__c/d-e.f--g", Ref{Repo: "a/b__c/d-e.f--g", Tag: "latest"}, "a/b__c/d-e.f--g:latest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if r != tc.want {
				t.Errorf("Parse(%q) = %+v, want %+v", tc.in, r, tc.want)
			}
			if r.String() != tc.key {
				t.Errorf("Parse(%q).String() = %q, want %q", tc.in, r.String(), tc.key)
			}
			again, err := Parse(r.String())
			if err != nil || again.String() != r.String() {
				t.Errorf("Parse(%q) = %v, %v: the key does not parse to itself", r.String(), again, err)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"too long", "a/" + strings.Repeat("b", 1024)},
		{"repository over 255 bytes", strings.Repeat("a", 256)},
		{"upper-case namespace", "UPPER/app"},
		{"upper-case repository", "registry.example/App"},
		{"empty tag", "app:"},
		{"short digest", "app@sha256:12"},
		{"empty digest", "app@"},
		{"two digests", "app@" + d + "@" + d},
		{"unknown digest algorithm", "app@md5:d41d8cd98f00b204e9800998ecf8427e"},
		{"double slash", "a//b"},
		{"leading slash", "/app"},
		{"trailing slash", "app/"},
		{"space in tag", "app:bad tag"},
		{"tag starting with a dot", "app:.v1"},
		{"tag starting with a dash", "app:-v1"},
		{"tag over 128 bytes", "app:" + strings.Repeat("t", 129)},
		{"bad tag beside a digest", "app:.t@" + d},
		{"leading separator", "-app"},
		{"trailing separator", "app-"},
		{"three underscores", "a___b"},
		{"URL scheme", "https://registry.example/app"},
		{"space in the host", "bad host.example/app"},
		{"registry only", "registry.example/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := Parse(tc.in); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("Parse(%q) = %+v, %v, want ErrInvalid", tc.in, r, err)
			}
		})
	}
}

func TestRefReference(t *testing.T) {
	for _, tc := range []struct {
		name string
		ref  Ref
		want string
	}{
		{"tag", Ref{Repo: "app", Tag: "v1"}, "v1"},
		{"digest", Ref{Repo: "app", Digest: d}, d},
		{"digest wins over tag", Ref{Repo: "app", Tag: "v1", Digest: d}, d},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.ref.Reference(); got != tc.want {
				t.Errorf("Reference() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHosts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		host      string
		hub       bool
		canonical string
	}{
		{"docker.io", "docker.io", true, "docker.io"},
		{"index.docker.io", "index.docker.io", true, "docker.io"},
		{"registry-1.docker.io", "registry-1.docker.io", true, "docker.io"},
		{"upper case is not Docker Hub as written", "Docker.IO", false, "docker.io"},
		{"another registry", "ghcr.io", false, "ghcr.io"},
		{"host and port in lower case", "Registry.Example:5000", false, "registry.example:5000"},
		{"Docker Hub with a port is another host", "docker.io:443", false, "docker.io:443"},
		{"a subdomain is another host", "mirror.docker.io", false, "mirror.docker.io"},
		{"empty", "", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsDockerHub(tc.host); got != tc.hub {
				t.Errorf("IsDockerHub(%q) = %v", tc.host, got)
			}
			if got := CanonicalHost(tc.host); got != tc.canonical {
				t.Errorf("CanonicalHost(%q) = %q, want %q", tc.host, got, tc.canonical)
			}
		})
	}
}
