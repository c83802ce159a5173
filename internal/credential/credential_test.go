package credential

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

func TestFromHeader(t *testing.T) {
	for _, tt := range []struct {
		name, header string
		ok           bool
	}{
		{"basic", "Basic YWxpY2U6c2VjcmV0", true},
		{"bearer", "Bearer eyJhbGciOi.x.y", true},
		{"scheme case", "bearer tok", true},
		{"empty", "", false},
		{"scheme alone", "Bearer", false},
		{"other scheme", "Digest x", false},
		{"newline", "Bearer a\r\nX-Evil: 1", false},
		{"too long", "Bearer " + strings.Repeat("a", MaxLen), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := !FromHeader(tt.header).IsZero(); got != tt.ok {
				t.Fatalf("FromHeader(%.20q) usable = %v, want %v", tt.header, got, tt.ok)
			}
		})
	}
}

// A credential never prints its secret, however it is formatted.
func TestCredentialNeverPrintsItsSecret(t *testing.T) {
	c := FromHeader("Bearer top-secret-token")
	for _, s := range []string{c.String(), fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), c.Key(),
		fmt.Sprint(Access{Repo: "r", Credential: c})} {
		if strings.Contains(s, "top-secret") {
			t.Fatalf("%q shows the secret", s)
		}
	}
	if c.Key() == FromHeader("Bearer other").Key() || c.Key() == "" {
		t.Fatal("keys do not tell credentials apart")
	}
}

func TestRefusal(t *testing.T) {
	var err error = &Refusal{Repo: "r", Challenge: `Basic realm="x"`}
	if !errors.Is(fmt.Errorf("wrapped: %w", err), errdefs.ErrUnauthorized) {
		t.Fatal("a refusal is not ErrUnauthorized")
	}
}
