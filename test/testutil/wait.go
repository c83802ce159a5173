package testutil

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// WaitHTTP polls url until it answers with status want, the process exits, or ctx ends.
func WaitHTTP(ctx context.Context, p *Process, url string, want int) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			_ = resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited while waiting for %s (status %v)", p.Name(), url, p.ExitErr())
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to answer %d: %w (last: %s)", url, want, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitListening polls until something accepts TCP connections on addr (host:port or a unix
// socket path when network is "unix"), the process exits, or ctx ends.
func WaitListening(ctx context.Context, p *Process, network, addr string) error {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited while waiting for %s (status %v)", p.Name(), addr, p.ExitErr())
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s %s: %w (last: %v)", network, addr, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
