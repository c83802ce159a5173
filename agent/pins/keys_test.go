package pins

import (
	"errors"
	"testing"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/reference"
)

// TestParseRefPinKeys keeps the keys of pins already recorded: a pin is looked up by the String
// of the reference it was made with, so these must not change. internal/reference tests the
// parser itself.
func TestParseRefPinKeys(t *testing.T) {
	const d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	for _, tc := range []struct {
		name string
		in   string
		want string
	}{
		{"bare name", "alpine", "alpine:latest"},
		{"Docker Hub as written", "docker.io/alpine:3.20", "docker.io/library/alpine:3.20"},
		{"no registry", "team/app:v1", "team/app:v1"},
		{"IP and port", "127.0.0.1:5000/test/app:v1", "127.0.0.1:5000/test/app:v1"},
		{"localhost and digest", "localhost/app@" + d, "localhost/app@" + d},
		{"digest over tag", "registry.example/a/b/c:t@" + d, "registry.example/a/b/c@" + d},
		{"host and port", "registry.example:443/app:1.0.0", "registry.example:443/app:1.0.0"},
		{"localhost and port", "localhost:5000/x", "localhost:5000/x:latest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := reference.Parse(tc.in)
			if err != nil {
				t.Fatalf("reference.Parse(%q): %v", tc.in, err)
			}
			if r.String() != tc.want {
				t.Errorf("reference.Parse(%q) = %q, want %q", tc.in, r.String(), tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"upper case", "UPPER/app"},
		{"empty tag", "app:"},
		{"short digest", "app@sha256:12"},
		{"double slash", "a//b"},
		{"space in tag", "app:bad tag"},
		{"leading slash", "/app"},
		{"empty digest", "app@"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := reference.Parse(tc.in); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("reference.Parse(%q) = %v, want ErrInvalid", tc.in, err)
			}
		})
	}
}
