package chunks

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

func blob(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func build(t *testing.T, alg digest.Algorithm, data []byte, chunkSize int64, writeSize int) *Map {
	t.Helper()
	b, err := NewBuilder(alg, chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; {
		k := min(writeSize, len(p))
		b.Write(p[:k])
		p = p[k:]
	}
	return b.Map()
}

func verifyAll(m *Map, data []byte) (int, error) {
	for i := 0; i < m.Len(); i++ {
		off, n := m.Range(i)
		if off+n > int64(len(data)) {
			return i, ErrMismatch
		}
		if err := m.Verify(i, data[off:off+n]); err != nil {
			return i, err
		}
	}
	return -1, nil
}

func TestHonestMapVerifies(t *testing.T) {
	for _, tc := range []struct {
		name      string
		alg       digest.Algorithm
		size      int
		chunk     int64
		writeSize int
	}{
		{"sha256 several chunks, odd writes", digest.SHA256, 12<<20 + 12345, 4 << 20, 100003},
		{"sha256 exact multiple", digest.SHA256, 3 * 65536, 65536, 65536},
		{"sha256 one partial chunk", digest.SHA256, 1000, 65536, 7},
		{"sha256 empty", digest.SHA256, 0, 64, 1},
		{"sha512", digest.SHA512, 1<<20 + 1, 128 << 10, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := blob(t, tc.size)
			m := build(t, tc.alg, data, tc.chunk, tc.writeSize)
			if want := tc.alg.FromBytes(data); m.Digest != want {
				t.Fatalf("digest %s, want %s", m.Digest, want)
			}
			if m.Len() != Count(int64(tc.size), tc.chunk) {
				t.Fatalf("%d states, want %d", m.Len(), Count(int64(tc.size), tc.chunk))
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			if i, err := verifyAll(m, data); err != nil {
				t.Fatalf("chunk %d: %v", i, err)
			}
			enc, _ := m.MarshalBinary()
			var back Map
			if err := back.UnmarshalBinary(enc); err != nil {
				t.Fatal(err)
			}
			if !back.Equal(m) {
				t.Fatal("round trip changed the map")
			}
		})
	}
}

// A wrong chunk fails exactly at that chunk, whoever's map is used.
func TestWrongChunkDetected(t *testing.T) {
	data := blob(t, 5*65536+100)
	m := build(t, digest.SHA256, data, 65536, 65536)
	for _, i := range []int{0, 2, 5} {
		bad := bytes.Clone(data)
		off, _ := m.Range(i)
		bad[off+10] ^= 1
		got, err := verifyAll(m, bad)
		if !errors.Is(err, ErrMismatch) || !errors.Is(err, errdefs.ErrDigestMismatch) || got != i {
			t.Fatalf("flip in chunk %d: failed at %d with %v", i, got, err)
		}
	}
}

// A forged map built for forged content verifies the forged chunks one by one, but can never
// finish at the honest digest: it is caught at the last chunk at the latest.
func TestForgedMapCaughtAtTheEnd(t *testing.T) {
	data := blob(t, 4*65536)
	honest := build(t, digest.SHA256, data, 65536, 65536)
	forgedData := bytes.Clone(data)
	forgedData[70000] ^= 0xff // in chunk 1
	forged := build(t, digest.SHA256, forgedData, 65536, 65536)
	forged.Digest = honest.Digest // the liar claims the honest blob
	if err := forged.Validate(); err != nil {
		t.Fatal(err) // shape is fine: only content can expose it
	}
	got, err := verifyAll(forged, forgedData)
	if !errors.Is(err, ErrMismatch) || got != forged.Len()-1 {
		t.Fatalf("forged map: failed at %d (%v), want the last chunk", got, err)
	}
	// Honest bytes under the forged map fail where the forged run starts.
	if got, err := verifyAll(forged, data); err == nil || got != 1 {
		t.Fatalf("honest data under forged map: failed at %d (%v), want 1", got, err)
	}
	// A forged map that keeps honest states but lies in the last one also fails at the end.
	lastLie := *honest
	lastLie.States = append([][]byte(nil), honest.States...)
	lastLie.States[3] = bytes.Repeat([]byte{1}, 32)
	if got, err := verifyAll(&lastLie, data); err == nil || got != 2 {
		t.Fatalf("lying last state: failed at %d (%v), want 2", got, err)
	}
}

func TestTruncatedBlobDetected(t *testing.T) {
	data := blob(t, 3*65536+500)
	m := build(t, digest.SHA256, data, 65536, 65536)
	short := data[:len(data)-1]
	if _, err := verifyAll(m, short); !errors.Is(err, ErrMismatch) {
		t.Fatalf("truncated: %v", err)
	}
	// A map claiming a shorter size, with the honest digest, cannot finish at it.
	tm := build(t, digest.SHA256, data[:3*65536], 65536, 65536)
	tm.Digest = m.Digest
	if _, err := verifyAll(tm, data[:3*65536]); !errors.Is(err, ErrMismatch) {
		t.Fatalf("truncated map: %v", err)
	}
}

func TestMapShapeRejected(t *testing.T) {
	data := blob(t, 3*65536)
	m := build(t, digest.SHA256, data, 65536, 65536)
	for _, tc := range []struct {
		name   string
		mutate func(*Map)
	}{
		{"chunk size not a block multiple", func(m *Map) { m.ChunkSize = 1000 }},
		{"too few states", func(m *Map) { m.States = m.States[:2] }},
		{"short state", func(m *Map) { m.States[1] = m.States[1][:31] }},
		{"wrong initial state", func(m *Map) { m.States[0] = bytes.Repeat([]byte{0}, 32) }},
		{"unsupported algorithm", func(m *Map) { m.Digest = digest.Digest("sha384:" + string(bytes.Repeat([]byte("a"), 96))) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *m
			c.States = append([][]byte(nil), m.States...)
			tc.mutate(&c)
			if err := c.Validate(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzUnmarshal(f *testing.F) {
	data := make([]byte, 3*65536)
	b, _ := NewBuilder(digest.SHA256, 65536)
	b.Write(data)
	enc, _ := b.Map().MarshalBinary()
	f.Add(enc)
	f.Add([]byte(magic))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var m Map
		if err := m.UnmarshalBinary(in); err != nil {
			return
		}
		if err := m.ValidatePartial(); err != nil {
			t.Fatalf("decoded map does not validate: %v", err)
		}
		_ = m.Verify(0, make([]byte, 10))
	})
}

// A builder resumed at a chunk boundary from a map reaches the same digest and map as one that
// hashed every byte.
func TestResumeBuilder(t *testing.T) {
	data := blob(t, 5*65536+300)
	m := build(t, digest.SHA256, data, 65536, 65536)
	for _, off := range []int64{0, 65536, 3 * 65536, 5 * 65536} {
		b, err := ResumeBuilder(m, off)
		if err != nil {
			t.Fatalf("resume at %d: %v", off, err)
		}
		b.Write(data[off:])
		if got := b.Map(); !got.Equal(m) {
			t.Fatalf("resume at %d: map differs (digest %s)", off, got.Digest)
		}
	}
	if _, err := ResumeBuilder(m, 100); err == nil {
		t.Fatal("resumed off a chunk boundary")
	}
}

// A provider still fetching a blob serves the map of the boundaries it has reached: it covers
// exactly the chunks whose end state is known, grows by extension, and verifies them.
func TestPartialMap(t *testing.T) {
	data := blob(t, 4*65536+10)
	full := build(t, digest.SHA256, data, 65536, 65536)
	b, _ := NewBuilder(digest.SHA256, 65536)
	b.Write(data[:2*65536])
	p := b.PartialMap(full.Digest, full.Size)
	if err := p.ValidatePartial(); err != nil || p.Complete() {
		t.Fatalf("partial map: %v complete=%v", err, p.Complete())
	}
	if !p.Covers(1) || p.Covers(2) {
		t.Fatalf("covers 1=%v 2=%v with %d states", p.Covers(1), p.Covers(2), p.Len())
	}
	if err := p.Verify(1, data[65536:2*65536]); err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(2, data[2*65536:3*65536]); !errors.Is(err, ErrNotYet) {
		t.Fatalf("chunk beyond the partial map: %v", err)
	}
	enc, _ := p.MarshalBinary()
	var back Map
	if err := back.UnmarshalBinary(enc); err != nil || !back.Equal(p) {
		t.Fatalf("partial round trip: %v", err)
	}
	b.Write(data[2*65536:])
	if done := b.PartialMap(full.Digest, full.Size); !done.Complete() || !done.Extends(p) || !done.Equal(full) {
		t.Fatal("the finished map does not extend the partial one")
	}
	forged := *full
	forged.States = append([][]byte(nil), full.States...)
	forged.States[1] = bytes.Repeat([]byte{9}, 32)
	if forged.Extends(p) {
		t.Fatal("a map with a different state extends the partial one")
	}
}

// A chunk streamed through a Verifier in pieces passes exactly when Verify passes it, in any
// order of chunks; extra or missing bytes fail.
func TestVerifierStreams(t *testing.T) {
	const cs = 1024
	data := blob(t, 5*cs+100)
	m := build(t, digest.SHA256, data, cs, 4096)
	m.Digest = digest.SHA256.FromBytes(data)
	for _, i := range []int{5, 0, 3, 1, 4, 2} {
		off, n := m.Range(i)
		v, err := m.NewVerifier(i)
		if err != nil {
			t.Fatal(err)
		}
		chunk := data[off : off+n]
		for len(chunk) > 0 {
			k := min(len(chunk), 77)
			v.Write(chunk[:k])
			chunk = chunk[k:]
		}
		if err := v.Check(); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	v, _ := m.NewVerifier(2)
	v.Write(data[2*cs : 3*cs+1])
	if err := v.Check(); !errors.Is(err, ErrMismatch) {
		t.Fatalf("one byte too many: %v", err)
	}
	v, _ = m.NewVerifier(5)
	v.Write(data[5*cs : 5*cs+99])
	if err := v.Check(); !errors.Is(err, ErrMismatch) {
		t.Fatalf("truncated last chunk: %v", err)
	}
	partial := &Map{Digest: m.Digest, Size: m.Size, ChunkSize: cs, States: m.States[:2]}
	if _, err := partial.NewVerifier(3); !errors.Is(err, ErrNotYet) {
		t.Fatalf("chunk past a partial map: %v", err)
	}
}

// A piece begun from its start state alone (its sender still receiving the blob) is checked once
// a longer map brings its end state: honest bytes verify, wrong ones or a forged end state fail,
// and a map that does not extend the one in use is not taken.
func TestBeginBeforeTheEndState(t *testing.T) {
	const cs = 4 << 10
	data := blob(t, 3*cs+100)
	full := build(t, digest.SHA256, data, cs, 1000)
	partial := &Map{Digest: full.Digest, Size: full.Size, ChunkSize: cs, States: full.States[:2]} // covers piece 0
	v, err := partial.Begin(1)
	if err != nil {
		t.Fatal(err)
	}
	v.Write(data[cs : 2*cs])
	if v.Covered() || !errors.Is(v.Check(), ErrNotYet) {
		t.Fatal("a piece without its end state was checked")
	}
	forged := &Map{Digest: full.Digest, Size: full.Size, ChunkSize: cs, States: [][]byte{full.States[0], full.States[1], make([]byte, 32)}}
	other := &Map{Digest: full.Digest, Size: full.Size, ChunkSize: cs, States: [][]byte{full.States[0], make([]byte, 32), full.States[2], full.States[3]}}
	v.Update(other) // disagrees with the map in use: ignored
	if v.Covered() {
		t.Fatal("took a map that does not extend the one in use")
	}
	fv, _ := partial.Begin(1)
	fv.Write(data[cs : 2*cs])
	fv.Update(forged)
	if err := fv.Check(); !errors.Is(err, ErrMismatch) {
		t.Fatalf("a forged end state: %v", err)
	}
	v.Update(full)
	if err := v.Check(); err != nil {
		t.Fatalf("honest piece: %v", err)
	}
	bad, _ := partial.Begin(1)
	wrong := bytes.Clone(data[cs : 2*cs])
	wrong[7] ^= 1
	bad.Write(wrong)
	bad.Update(full)
	if err := bad.Check(); !errors.Is(err, ErrMismatch) {
		t.Fatalf("a wrong piece: %v", err)
	}
	if _, err := partial.Begin(2); !errors.Is(err, ErrNotYet) {
		t.Fatalf("began a piece without its start state: %v", err)
	}
	last, _ := full.Begin(3)
	last.Write(data[3*cs:])
	if err := last.Check(); err != nil {
		t.Fatalf("last piece: %v", err)
	}
}

// A blob of more than MaxChunks chunks has no map, but its digest is still computed right: the
// store keeps it and serves it whole. One of exactly MaxChunks chunks still has one.
func TestBuilderBeyondMaxChunks(t *testing.T) {
	const cs = 64 // the smallest chunk size sha256 allows, to reach the cap with 16 MiB
	data := blob(t, MaxChunks*cs+100)
	b, err := NewBuilder(digest.SHA256, cs)
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; {
		k := min(len(p), 100_003)
		if n, err := b.Write(p[:k]); err != nil || n != k {
			t.Fatalf("Write = %d, %v", n, err)
		}
		p = p[k:]
	}
	if got, want := b.Digest(), digest.FromBytes(data); got != want {
		t.Fatalf("digest %s, want %s", got, want)
	}
	if m := b.Map(); m != nil {
		t.Fatalf("a map of %d states for %d chunks", m.Len(), Count(int64(len(data)), cs))
	}
	if m := b.PartialMap(digest.FromBytes(data), int64(len(data))); m != nil {
		t.Fatal("a partial map for a blob too large for a map")
	}
	if _, err := Read(context.Background(), bytes.NewReader(data), digest.SHA256, cs); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("Read = %v, want ErrTooLarge", err)
	}
	// Exactly MaxChunks chunks: the largest blob with a map.
	exact := data[:MaxChunks*cs]
	m, err := Read(context.Background(), bytes.NewReader(exact), digest.SHA256, cs)
	if err != nil || m.Len() != MaxChunks || m.Validate() != nil || m.Digest != digest.FromBytes(exact) {
		t.Fatalf("map of %d chunks: %v", MaxChunks, err)
	}
}
