package cleanup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// Resolver finds the cleanup pods' addresses from the headless Service's name (net.Resolver).
// An IP literal resolves to itself.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

var _ Resolver = (*net.Resolver)(nil)

// Defaults of WaitOptions.
const (
	DefaultInterval = 2 * time.Second
	DefaultRounds   = 3
	probeTimeout    = 2 * time.Second
	probeParallel   = 16
)

// ErrNotDone means the wait ended (its context's deadline) before every cleanup pod said done.
var ErrNotDone = errors.New("cleanup not confirmed on every node")

// WaitOptions is where the cleanup pods are and how sure Wait must be.
type WaitOptions struct {
	// Endpoint is host:port: the headless Service's DNS name (or an IP) and the pods' port.
	Endpoint string
	Resolver Resolver     // net.DefaultResolver if nil
	Client   *http.Client // http.DefaultClient if nil; each probe is bounded anyway
	// Interval is the time between rounds (DefaultInterval if zero).
	Interval time.Duration
	// Rounds is how many rounds in a row must find the same addresses, each answering done
	// (DefaultRounds if zero). A pod gets its address when its sandbox starts, before its image
	// is pulled, and the Service publishes it before it is ready; a node whose pod has no
	// address yet is what the repeated rounds are for.
	Rounds int
	Log    *slog.Logger
}

// Wait returns nil once o.Rounds rounds in a row have resolved the same non-empty set of
// addresses and every one answered 200 on HealthPath. It gives up when ctx ends, with ErrNotDone
// and what the last round found (the addresses that did not answer done, or the lookup's error).
func Wait(ctx context.Context, o WaitOptions) error {
	host, port, err := net.SplitHostPort(o.Endpoint)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("endpoint %q: want host:port (the cleanup Service's name and port)", o.Endpoint)
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Rounds <= 0 {
		o.Rounds = DefaultRounds
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	var prev []string
	streak := 0
	var last error
	ticker := time.NewTicker(o.Interval)
	defer ticker.Stop()
	for {
		addrs, err := round(ctx, o, host, port)
		if ctx.Err() != nil {
			// The deadline cut this round short: say what the last whole round found.
			if last == nil {
				last = err
			}
			return notDone(o, last, streak, len(prev))
		}
		switch {
		case err != nil:
			streak, prev, last = 0, nil, err
			log.Info("cleanup not done yet", "endpoint", o.Endpoint, "reason", err.Error())
		case slices.Equal(addrs, prev):
			streak, last = streak+1, nil
		default:
			streak, prev, last = 1, addrs, nil
		}
		if err == nil {
			log.Info("every cleanup pod answers done", "pods", len(addrs), "round", streak, "of", o.Rounds)
			if streak >= o.Rounds {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return notDone(o, last, streak, len(prev))
		case <-ticker.C:
		}
	}
}

func notDone(o WaitOptions, last error, streak, pods int) error {
	if last == nil {
		last = fmt.Errorf("%d of %d rounds with the same %d pods done", streak, o.Rounds, pods)
	}
	return fmt.Errorf("%w (%s): %v", ErrNotDone, o.Endpoint, last)
}

// round resolves host and probes every address; it returns the sorted addresses when all
// answered done.
func round(ctx context.Context, o WaitOptions, host, port string) ([]string, error) {
	lctx, cancel := context.WithTimeout(ctx, probeTimeout)
	ips, err := o.Resolver.LookupIPAddr(lctx, host)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("looking up %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%s has no address: no cleanup pod has started", host)
	}
	addrs := make([]string, 0, len(ips))
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip.String(), port))
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)

	failed := make([]error, len(addrs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(probeParallel)
	for i, a := range addrs {
		g.Go(func() error {
			failed[i] = probe(gctx, o.Client, a)
			return nil
		})
	}
	_ = g.Wait()
	var msgs []string
	for _, e := range failed {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	if len(msgs) > 0 {
		const shown = 5
		more := ""
		if len(msgs) > shown {
			more = fmt.Sprintf("; and %d more", len(msgs)-shown)
			msgs = msgs[:shown]
		}
		return nil, fmt.Errorf("%d of %d cleanup pods not done: %s%s", len(failed)-countNil(failed), len(addrs), strings.Join(msgs, "; "), more)
	}
	return addrs, nil
}

func countNil(errs []error) int {
	n := 0
	for _, e := range errs {
		if e == nil {
			n++
		}
	}
	return n
}

func probe(ctx context.Context, client *http.Client, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+HealthPath, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err // names the URL
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", addr, resp.Status)
	}
	return nil
}
