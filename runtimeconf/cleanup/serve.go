// Package cleanup restores the runtime's files on every node after the Helm release is deleted,
// without the Kubernetes API: a pod on each node removes Shoal's files and then says so over
// HTTP (Serve), and one waiting pod finds those pods by a headless Service's DNS name and
// returns once every one of them has answered "done" for a few rounds in a row (Wait).
package cleanup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// HealthPath is where a cleanup pod answers 200 once its node's files are restored, and 503
// before. It is the pod's readiness probe too, so `kubectl get` shows which nodes are done.
const HealthPath = "/healthz"

// shutdownTimeout bounds the server's graceful stop.
const shutdownTimeout = 5 * time.Second

// ServeOptions is what Serve does and for how long.
type ServeOptions struct {
	// Remove restores the node's files; Serve answers done only after it returned nil.
	Remove func() error
	// For is how long to keep answering after the removal (the waiting pod must see every node
	// answer); Serve returns nil when it has passed. Zero: until ctx ends.
	For time.Duration
	Log *slog.Logger
}

// Serve answers HealthPath on ln (503 at first), runs o.Remove, then answers 200 until o.For has
// passed or ctx ends. A failed removal ends Serve with its error: the pod restarts and tries
// again, and is never counted as done. Serve closes ln.
func Serve(ctx context.Context, ln net.Listener, o ServeOptions) error {
	if o.Remove == nil {
		ln.Close()
		return errors.New("cleanup: nothing to remove with")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var done atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		if !done.Load() {
			http.Error(w, "removal not finished", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "done")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	stop := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}

	if err := o.Remove(); err != nil {
		_ = stop()
		return fmt.Errorf("restoring the runtime's files: %w", err)
	}
	done.Store(true)
	log.Info("runtime files restored; answering done", "listen", ln.Addr().String(), "for", o.For.String())

	var timeout <-chan time.Time
	if o.For > 0 {
		t := time.NewTimer(o.For)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
	case <-timeout:
	case err := <-served:
		served <- err // for stop
	}
	return stop()
}
