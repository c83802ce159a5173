package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// fetchResult is one timed GET.
type fetchResult struct {
	ttfb  time.Duration // request sent → first body byte received
	total time.Duration // request sent → last body byte received
	n     int64
}

// fetch GETs url and reads the body to io.Discard, as a registry client that hashes elsewhere
// would. It fails unless the answer is 200 with exactly want bytes.
func fetch(ctx context.Context, c *http.Client, url string, want int64) (fetchResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fetchResult{}, err
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return fetchResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fetchResult{}, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	var r fetchResult
	var one [1]byte
	for r.n == 0 {
		m, err := resp.Body.Read(one[:])
		r.n += int64(m)
		if err != nil {
			if errors.Is(err, io.EOF) && r.n == want {
				break
			}
			return r, fmt.Errorf("GET %s: first byte: %w", url, err)
		}
	}
	r.ttfb = time.Since(start)
	m, err := io.Copy(io.Discard, resp.Body)
	r.n += m
	r.total = time.Since(start)
	if err != nil {
		return r, fmt.Errorf("GET %s after %d bytes: %w", url, r.n, err)
	}
	if r.n != want {
		return r, fmt.Errorf("GET %s: %d bytes, want %d", url, r.n, want)
	}
	return r, nil
}

// tcpBaseline sends the file over a fresh loopback TCP connection with io.Copy, the receiver
// reading with io.Copy to io.Discard, and returns the time from dial to the receiver's end of
// stream. io.Copy from the *os.File uses sendfile; with plain it is hidden behind an io.Reader, so
// io.Copy moves it with 32 KiB read and write calls instead (what the agent does on a cache hit).
func tcpBaseline(ctx context.Context, path string, plain bool) (time.Duration, error) {
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

func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

// writeFloor writes n bytes of incompressible data into a new file in dir with 256 KiB writes,
// as the agent's store does (no fsync: the agent syncs after the last byte is served), and returns
// the time it took and the file, which the caller removes later: removing it at once would hand its
// freshly used pages to whatever writes next, which on a VM whose fresh memory is slow to touch
// makes the next write look faster than it is.
func writeFloor(dir string, n int64, pattern []byte) (time.Duration, string, error) {
	f, err := os.CreateTemp(dir, "write-floor-*")
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	start := time.Now()
	const chunk = 256 << 10
	for off := int64(0); off < n; off += chunk {
		i := int(off % int64(len(pattern)-chunk))
		if _, err := f.Write(pattern[i : i+int(min(chunk, n-off))]); err != nil {
			return 0, f.Name(), err
		}
	}
	return time.Since(start), f.Name(), nil
}

// hashFloor is the time to SHA-256 n bytes on one core, as the agent verifies a blob.
func hashFloor(n int64, pattern []byte) time.Duration {
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
