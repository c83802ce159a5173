package pins

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Client calls a node's admin endpoints (the shoal preheat and pin commands use it).
type Client struct {
	// Base is the node's URL, e.g. http://127.0.0.1:5000 or https://seed-1.example.com:5000.
	Base string
	// Token is the admin token ("" sends none: a node on loopback without a token file). It is
	// never sent over plain HTTP to an address beyond loopback.
	Token string
	// HTTP is the client to use (nil: http.DefaultClient); give it the node's CA for https.
	// Preheats take as long as the image's download: give it no overall timeout, and cancel
	// through the context instead.
	HTTP *http.Client
}

// NewClient returns a client of the node at addr: a URL, or host:port, which is spoken to over
// plain HTTP on loopback (127.0.0.0/8, ::1, localhost) and over HTTPS anywhere else.
func NewClient(addr, token string) *Client {
	base := addr
	if !strings.Contains(base, "://") {
		scheme := "https://"
		if u, err := url.Parse("http://" + base); err == nil && isLoopbackHost(u.Hostname()) {
			scheme = "http://"
		}
		base = scheme + base
	}
	return &Client{Base: strings.TrimRight(base, "/"), Token: token}
}

// isLoopbackHost reports whether host (no port) is localhost or a loopback address: plain HTTP
// to it does not leave the machine.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ErrTokenInClear is returned instead of sending the admin token over plain HTTP beyond loopback.
var ErrTokenInClear = errors.New("refusing to send the admin token over plain HTTP beyond loopback: " +
	"use https:// (the node's --tls-cert), or reach the node on loopback (kubectl port-forward, ssh -L)")

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	if c.Token != "" {
		u, err := url.Parse(c.Base)
		if err != nil {
			return nil, fmt.Errorf("node URL %q: %w", c.Base, err)
		}
		if u.Scheme != "https" && !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("%s: %w", c.Base, ErrTokenInClear)
		}
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, responseError(resp)
	}
	return resp, nil
}

// responseError turns an error answer into an error with its message.
func responseError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error  string `json:"error"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil {
		switch {
		case e.Error != "":
			msg = e.Error
		case len(e.Errors) > 0:
			msg = e.Errors[0].Message
		}
	}
	return fmt.Errorf("%s: %s", resp.Status, msg)
}

// Preheat asks the node to fetch an image, calling progress with each report, and returns the
// last one. It fails when the node reports an error or the stream ends without "done".
func (c *Client) Preheat(ctx context.Context, req PreheatRequest, progress func(Progress)) (Progress, error) {
	return c.stream(ctx, "/shoal/v1/preheat", req, progress)
}

// Pin asks the node to fetch an image and pin it.
func (c *Client) Pin(ctx context.Context, req PreheatRequest, progress func(Progress)) (Progress, error) {
	return c.stream(ctx, "/shoal/v1/pins", req, progress)
}

func (c *Client) stream(ctx context.Context, path string, req PreheatRequest, progress func(Progress)) (Progress, error) {
	resp, err := c.do(ctx, http.MethodPost, path, req)
	if err != nil {
		return Progress{}, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var last Progress
	for sc.Scan() {
		var p Progress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return last, fmt.Errorf("malformed progress line: %w", err)
		}
		last = p
		if progress != nil {
			progress(p)
		}
		switch p.Event {
		case "error":
			return p, fmt.Errorf("%s", p.Error)
		case "done":
			return p, nil
		}
	}
	if err := sc.Err(); err != nil {
		return last, fmt.Errorf("reading progress: %w", err)
	}
	return last, fmt.Errorf("the node ended the stream before the preheat finished")
}

// Unpin removes the pin of ref.
func (c *Client) Unpin(ctx context.Context, ref string) error {
	resp, err := c.do(ctx, http.MethodDelete, "/shoal/v1/pins?ref="+url.QueryEscape(ref), nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// Pins lists the node's pins.
func (c *Client) Pins(ctx context.Context) ([]Pin, error) {
	resp, err := c.do(ctx, http.MethodGet, "/shoal/v1/pins", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var pins []Pin
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&pins); err != nil {
		return nil, fmt.Errorf("reading pins: %w", err)
	}
	return pins, nil
}
