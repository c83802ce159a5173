package benchorigin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// RunChild runs an origin as a process of its own, for a benchmark whose origin sits in a
// network namespace: it serves the blob files of -dir, unpaced (the namespace's link paces it),
// on -listen; puts the manifest file -manifest under -ref (repository:tag) with media type
// -type; serves its counts on the Unix socket -socket (see Remote); prints "ready"; and stops on
// SIGTERM.
func RunChild(args []string) error {
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	dir := fs.String("dir", "", "blob files")
	listen := fs.String("listen", "", "host:port")
	sock := fs.String("socket", "", "Unix socket for the counts")
	manifest := fs.String("manifest", "", "manifest file to put")
	ref := fs.String("ref", "", "repository:tag of the manifest")
	mt := fs.String("type", "", "the manifest's media type")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o, err := StartAt(*dir, Pacing{}, *listen)
	if err != nil {
		return err
	}
	defer o.Close()
	if *manifest != "" {
		b, err := os.ReadFile(*manifest)
		if err != nil {
			return err
		}
		i := strings.LastIndex(*ref, ":")
		if i < 0 {
			return fmt.Errorf("-ref %q: want repository:tag", *ref)
		}
		repo, tag := (*ref)[:i], (*ref)[i+1:]
		req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v2/%s/manifests/%s", o.URL(), repo, tag), bytes.NewReader(b))
		req.Header.Set("Content-Type", *mt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("PUT %s: %s: %s", *ref, resp.Status, body)
		}
	}
	_ = os.Remove(*sock)
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(o.Counts())
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("ready")
	<-sigs
	return nil
}

// Remote reads the counts of an origin run by RunChild, over its Unix socket.
type Remote struct {
	client *http.Client
}

// NewRemote asks the origin child whose counts socket is sock.
func NewRemote(sock string) *Remote {
	return &Remote{client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}}
}

// Counts is what the origin has served so far.
func (r *Remote) Counts() (Counts, error) {
	var c Counts
	resp, err := r.client.Get("http://origin/counts")
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, errors.New("origin counts: " + resp.Status)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&c)
	return c, err
}
