package chunks

import (
	"errors"
	"testing"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

func TestSetRoundTrip(t *testing.T) {
	for _, n := range []int{1, 7, 8, 63, 64, 65, 200} {
		s := NewSet(n)
		for i := 0; i < n; i += 3 {
			s.Add(i)
		}
		s.Add(n - 1)
		s.Add(n) // out of range: ignored
		b, _ := s.MarshalBinary()
		got, err := SetFromBinary(b, n)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if got.Count() != s.Count() {
			t.Fatalf("n=%d: count %d, want %d", n, got.Count(), s.Count())
		}
		for i := range n {
			if got.Has(i) != s.Has(i) {
				t.Fatalf("n=%d: chunk %d differs", n, i)
			}
		}
		got.Remove(n - 1)
		if got.Has(n-1) || got.Count() != s.Count()-1 {
			t.Fatalf("n=%d: remove failed", n)
		}
	}
}

func TestSetFromBinaryRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		n    int
	}{
		{"short", []byte{}, 3},
		{"long", []byte{1, 2}, 3},
		{"bit past end", []byte{0x08}, 3},
		{"too many chunks", make([]byte, (MaxChunks+8)/8), MaxChunks + 1},
	} {
		if _, err := SetFromBinary(tc.b, tc.n); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", tc.name, err)
		}
	}
}
