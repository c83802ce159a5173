package keys

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

func TestSwarmKeyGenerateAndParse(t *testing.T) {
	t.Parallel()
	a, err := NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSwarmKey()
	if bytes.Equal(a, b) {
		t.Fatal("two fresh swarm keys are equal")
	}
	if !bytes.HasPrefix(a, []byte("/key/swarm/psk/1.0.0/\n/base16/\n")) {
		t.Errorf("key file does not start with the pnet v1 base16 header:\n%s", a)
	}
	psk, err := ParseSwarmKey(a)
	if err != nil {
		t.Fatalf("ParseSwarmKey(NewSwarmKey()): %v", err)
	}
	if len(psk) != 32 {
		t.Errorf("PSK is %d bytes, want 32", len(psk))
	}
}

func TestParseSwarmKey(t *testing.T) {
	t.Parallel()
	hex64 := strings.Repeat("0123456789abcdef", 4)
	key32 := bytes.Repeat([]byte{7}, 32)
	for _, tc := range []struct {
		name    string
		in      string
		wantErr string // substring; empty means success
	}{
		{name: "base16", in: "/key/swarm/psk/1.0.0/\n/base16/\n" + hex64 + "\n"},
		{name: "no trailing newline", in: "/key/swarm/psk/1.0.0/\n/base16/\n" + hex64},
		{name: "CRLF and surrounding blanks", in: "/key/swarm/psk/1.0.0/\r\n/base16/\r\n  " + hex64 + "\r\n\r\n"},
		{name: "upper-case hex", in: "/key/swarm/psk/1.0.0/\n/base16/\n" + strings.ToUpper(hex64) + "\n"},
		{name: "base64", in: "/key/swarm/psk/1.0.0/\n/base64/\n" + base64.StdEncoding.EncodeToString(key32) + "\n"},
		{name: "bin", in: "/key/swarm/psk/1.0.0/\n/bin/\n" + string(key32)},
		{name: "empty", in: "", wantErr: "empty"},
		{name: "blank", in: " \n", wantErr: "empty"},
		{name: "bare hex", in: hex64, wantErr: "first line must be"},
		{name: "wrong header", in: "/key/swarm/psk/2.0.0/\n/base16/\n" + hex64, wantErr: "first line must be"},
		{name: "header only", in: "/key/swarm/psk/1.0.0/\n", wantErr: "missing encoding line"},
		{name: "unknown encoding", in: "/key/swarm/psk/1.0.0/\n/base32/\n" + hex64, wantErr: "unknown encoding"},
		{name: "short hex", in: "/key/swarm/psk/1.0.0/\n/base16/\n" + hex64[:62], wantErr: "64 hex digits, got 62"},
		{name: "long hex", in: "/key/swarm/psk/1.0.0/\n/base16/\n" + hex64 + "00", wantErr: "64 hex digits, got 66"},
		{name: "not hex", in: "/key/swarm/psk/1.0.0/\n/base16/\n" + strings.Repeat("zz", 32), wantErr: "invalid byte"},
		{name: "short base64", in: "/key/swarm/psk/1.0.0/\n/base64/\n" + base64.StdEncoding.EncodeToString(key32[:16]), wantErr: "32 bytes, got 16"},
		{name: "short bin", in: "/key/swarm/psk/1.0.0/\n/bin/\nabc", wantErr: "32 bytes, got 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			psk, err := ParseSwarmKey([]byte(tc.in))
			if tc.wantErr == "" {
				if err != nil || len(psk) != 32 {
					t.Fatalf("ParseSwarmKey = %d bytes, %v; want a 32-byte key", len(psk), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("ParseSwarmKey error = %v; want ErrInvalid mentioning %q", err, tc.wantErr)
			}
		})
	}
}
