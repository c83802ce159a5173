// Package benchmeasure times what the benchmark programs compare: a GET as a registry client
// makes it, and the physical baselines and floors beside it (the same file over loopback TCP,
// writing and hashing as many bytes), in alternating order.
package benchmeasure

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"syscall"
	"time"
)

// Result is one timed GET.
type Result struct {
	TTFB  time.Duration // request sent → first body byte received
	Total time.Duration // request sent → last body byte received
	N     int64         // body bytes
}

// Fetch GETs url and reads the body to io.Discard, as a registry client that hashes elsewhere
// would. It fails unless the answer is 200 with exactly want bytes.
func Fetch(ctx context.Context, c *http.Client, url string, want int64) (Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Result{}, err
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return Result{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return Result{}, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	var r Result
	var one [1]byte
	for r.N == 0 {
		m, err := resp.Body.Read(one[:])
		r.N += int64(m)
		if err != nil {
			if errors.Is(err, io.EOF) && r.N == want {
				break
			}
			return r, fmt.Errorf("GET %s: first byte: %w", url, err)
		}
	}
	r.TTFB = time.Since(start)
	m, err := io.Copy(io.Discard, resp.Body)
	r.N += m
	r.Total = time.Since(start)
	if err != nil {
		return r, fmt.Errorf("GET %s after %d bytes: %w", url, r.N, err)
	}
	if r.N != want {
		return r, fmt.Errorf("GET %s: %d bytes, want %d", url, r.N, want)
	}
	return r, nil
}

// TCPCopy sends the file at path over a fresh loopback TCP connection with io.Copy, the receiver
// reading with io.Copy to io.Discard, and returns the time from dial to the receiver's end of
// stream. io.Copy from the *os.File uses sendfile; with plain it is hidden behind an io.Reader, so
// io.Copy moves it with 32 KiB read and write calls instead.
func TCPCopy(ctx context.Context, path string, plain bool) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	type res struct {
		n   int64
		err error
	}
	got := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- res{err: err}
			return
		}
		defer c.Close()
		n, err := io.Copy(io.Discard, c)
		got <- res{n, err}
	}()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var src io.Reader = f
	if plain {
		src = struct{ io.Reader }{f}
	}
	if _, err := io.Copy(conn, src); err != nil {
		conn.Close()
		return 0, err
	}
	conn.Close()
	r := <-got
	elapsed := time.Since(start)
	if r.err != nil {
		return 0, r.err
	}
	if r.n != fi.Size() {
		return 0, fmt.Errorf("baseline received %d bytes, want %d", r.n, fi.Size())
	}
	return elapsed, nil
}

// Pattern is 4 MiB of random bytes, the same for the same seed, for WriteFloor and HashFloor.
func Pattern(seed byte) []byte {
	b := make([]byte, 4<<20)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// WriteFloor writes n bytes of pattern (incompressible data) into a new file in dir with 256 KiB
// writes, as the agent's store does (no fsync: the agent syncs after the last byte is served),
// and returns the time and the CPU time it took, and the file, which the caller removes later:
// removing it at once would hand its freshly used pages to whatever writes next, which on a VM
// whose fresh memory is slow to touch makes the next write look faster than it is.
func WriteFloor(dir string, n int64, pattern []byte) (elapsed, cpu time.Duration, file string, err error) {
	f, err := os.CreateTemp(dir, "write-floor-*")
	if err != nil {
		return 0, 0, "", err
	}
	defer f.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	start := time.Now()
	const chunk = 256 << 10
	for off := int64(0); off < n; off += chunk {
		i := int(off % int64(len(pattern)-chunk))
		if _, err := f.Write(pattern[i : i+int(min(chunk, n-off))]); err != nil {
			return 0, 0, f.Name(), err
		}
	}
	return time.Since(start), threadCPU() - cpu0, f.Name(), nil
}

// threadCPU is the calling OS thread's user + system CPU time (RUSAGE_THREAD).
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// HashFloor is the time to SHA-256 n bytes of pattern on one core, as the agent verifies a blob.
func HashFloor(n int64, pattern []byte) time.Duration {
	h := sha256.New()
	start := time.Now()
	for left := n; left > 0; {
		m := min(int64(len(pattern)), left)
		h.Write(pattern[:m])
		left -= m
	}
	_ = h.Sum(nil)
	return time.Since(start)
}

// InOrder runs a then b, or b then a, to spread any order effect over the runs.
func InOrder(aFirst bool, a, b func() error) error {
	if !aFirst {
		a, b = b, a
	}
	if err := a(); err != nil {
		return err
	}
	return b()
}
