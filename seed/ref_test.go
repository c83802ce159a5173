package seed

import (
	"errors"
	"testing"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

func TestParseRef(t *testing.T) {
	const d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	for in, want := range map[string]string{
		"alpine":                         "alpine:latest",
		"docker.io/alpine:3.20":          "docker.io/library/alpine:3.20",
		"team/app:v1":                    "team/app:v1",
		"127.0.0.1:5000/test/app:v1":     "127.0.0.1:5000/test/app:v1",
		"localhost/app@" + d:             "localhost/app@" + d,
		"registry.example/a/b/c:t@" + d:  "registry.example/a/b/c@" + d,
		"registry.example:443/app:1.0.0": "registry.example:443/app:1.0.0",
	} {
		r, err := ParseRef(in)
		if err != nil {
			t.Errorf("ParseRef(%q): %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("ParseRef(%q) = %q, want %q", in, r.String(), want)
		}
	}
	for _, in := range []string{"", "UPPER/app", "app:", "app@sha256:12", "a//b", "app:bad tag", "/app", "app@"} {
		if _, err := ParseRef(in); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseRef(%q) = %v, want ErrInvalid", in, err)
		}
	}
}
