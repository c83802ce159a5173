package keys

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/libp2p/go-libp2p/core/pnet"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

const swarmKeyHeader = "/key/swarm/psk/1.0.0/"

// NewSwarmKey returns the contents of a fresh swarm.key file: 32 random bytes in the libp2p private network
// v1 format with base16 encoding, the form every libp2p implementation reads.
func NewSwarmKey() ([]byte, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, fmt.Errorf("swarm key: %w", err)
	}
	return fmt.Appendf(nil, "%s\n/base16/\n%s\n", swarmKeyHeader, hex.EncodeToString(k[:])), nil
}

// ParseSwarmKey decodes a swarm.key file (libp2p pnet v1: a header line, an encoding line /base16/, /base64/
// or /bin/, then a 32-byte key). Surrounding whitespace and CRLF line ends are accepted; anything else that
// is not exactly one 32-byte key fails with errdefs.ErrInvalid and says what was wrong.
func ParseSwarmKey(b []byte) (pnet.PSK, error) {
	invalid := func(format string, args ...any) (pnet.PSK, error) {
		return nil, fmt.Errorf("swarm key: %s: %w", fmt.Sprintf(format, args...), errdefs.ErrInvalid)
	}
	header, rest, ok := bytes.Cut(b, []byte("\n"))
	if len(bytes.TrimSpace(b)) == 0 {
		return invalid("empty")
	}
	if !ok || string(bytes.TrimSpace(header)) != swarmKeyHeader {
		return invalid("first line must be %q, got %q", swarmKeyHeader, truncate(bytes.TrimSpace(header)))
	}
	encoding, payload, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return invalid("missing encoding line and key")
	}
	var key []byte
	switch enc := string(bytes.TrimSpace(encoding)); enc {
	case "/base16/":
		text := bytes.TrimSpace(payload)
		if len(text) != 64 {
			return invalid("base16 key must be 64 hex digits, got %d characters", len(text))
		}
		k, err := hex.DecodeString(string(text))
		if err != nil {
			return invalid("base16 key: %v", err)
		}
		key = k
	case "/base64/":
		k, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(payload)))
		if err != nil {
			return invalid("base64 key: %v", err)
		}
		key = k
	case "/bin/":
		key = payload
	default:
		return invalid("unknown encoding line %q (want /base16/, /base64/ or /bin/)", truncate([]byte(enc)))
	}
	if len(key) != 32 {
		return invalid("key must be 32 bytes, got %d", len(key))
	}
	return pnet.PSK(key), nil
}

func truncate(b []byte) string {
	const limit = 40
	if len(b) > limit {
		return string(b[:limit]) + "..."
	}
	return string(b)
}
