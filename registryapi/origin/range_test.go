package origin

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
)

// GetBlobAt resumes a blob at an offset, whether the origin honours Range or ignores it.
func TestGetBlobAt(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(http.Handler) http.Handler
	}{
		{"origin honours Range", nil},
		{"origin ignores Range", func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.Header.Del("Range")
				next.ServeHTTP(w, r)
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startOrigin(t, tc.wrap)
			img := ociImage(t)
			o.push(t, "test/app", "v1", img)
			d, want := layerDigest(t, img)
			c := newClient(t)
			for _, off := range []int64{0, 1, int64(len(want)) / 2, int64(len(want)) - 1} {
				body, size, err := c.GetBlobAt(context.Background(), o.reg, "test/app", d, off, int64(len(want)))
				if err != nil {
					t.Fatalf("offset %d: %v", off, err)
				}
				got, err := io.ReadAll(body)
				body.Close()
				if err != nil {
					t.Fatal(err)
				}
				if size != int64(len(want)) || !bytes.Equal(got, want[off:]) {
					t.Fatalf("offset %d: size %d, %d bytes", off, size, len(got))
				}
			}
		})
	}
}
