package hosted

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
)

// BenchmarkPush pushes a 64 MiB blob through the HTTP edge, whole and in 8 MiB chunks: the
// bytes are written to disk once (to the upload file, renamed into the store at the end), so
// the cost should stay close to one file write plus one hash of the blob.
func BenchmarkPush(b *testing.B) {
	const size = 64 << 20
	blob := make([]byte, size)
	if _, err := rand.Read(blob); err != nil {
		b.Fatal(err)
	}
	for _, chunk := range []int{size, 8 << 20} {
		b.Run(fmt.Sprintf("chunk=%dMiB", chunk>>20), func(b *testing.B) {
			s := newSeed(b)
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				blob[0], blob[1] = byte(i), byte(i>>8) // a new digest each time: nothing is deduplicated
				d := digest.FromBytes(blob)
				b.StartTimer()
				r, err := s.try(http.MethodPost, "/v2/bench/blob/blobs/uploads/", nil)
				if err != nil || r.status != http.StatusAccepted {
					b.Fatalf("POST: %v %d", err, r.status)
				}
				loc := r.header.Get("Location")
				for off := 0; off < size; off += chunk {
					r, err = s.try(http.MethodPatch, loc, blob[off:off+chunk], fmt.Sprintf("Content-Range: %d-%d", off, off+chunk-1))
					if err != nil || r.status != http.StatusAccepted {
						b.Fatalf("PATCH: %v %d %s", err, r.status, r.body)
					}
				}
				r, err = s.try(http.MethodPut, loc+"?digest="+d.String(), nil)
				if err != nil || r.status != http.StatusCreated {
					b.Fatalf("PUT: %v %d %s", err, r.status, r.body)
				}
			}
		})
	}
}
