// Command private measures what authorizing private repositories costs: the origin requests a
// node makes to check client credentials (one per credential, repository and --private-access-ttl
// on every node that serves the client or a peer of it) and the latency they add to the first
// request, against later requests and against a public repository. N clients, each with its own
// credential, pull one image twice within the TTL and once more after it, from a node that holds
// the image (local) and through a node without credentials that takes the image from a peer.
//
// The origin is go-containerregistry's registry in this process behind a Basic-auth wrapper:
// repositories under private/ need a known user's credential, the rest are public. It counts what
// it is asked, by kind.
//
//	go run ./test/bench/private -clients 20 -out docs/benchmarks-private.md
package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/p2p"
)

func main() {
	clients := flag.Int("clients", 20, "clients, each with its own credential")
	ttl := flag.Duration("ttl", 2*time.Second, "--private-access-ttl of the nodes (short, so the run can outlast it)")
	out := flag.String("out", "", "write the Markdown report here (default: stdout)")
	flag.Parse()
	if err := run(*clients, *ttl, *out); err != nil {
		log.Fatal(err)
	}
}

// origin is the counting, authenticating origin.
type origin struct {
	inner http.Handler
	users map[string]string // user → password

	mu     sync.Mutex
	counts map[string]int
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := r.Method + " " + kindOf(r.URL.Path)
	if strings.HasPrefix(r.URL.Path, "/v2/private/") {
		u, p, ok := r.BasicAuth()
		if !ok || o.users[u] != p || p == "" {
			kind += " (401)"
			o.count(kind)
			w.Header().Set("WWW-Authenticate", `Basic realm="bench"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
	}
	o.count(kind)
	o.inner.ServeHTTP(w, r)
}

func kindOf(path string) string {
	switch {
	case strings.Contains(path, "/manifests/"):
		return "manifest"
	case strings.Contains(path, "/blobs/"):
		return "blob"
	case strings.HasSuffix(path, "/tags/list"):
		return "tags"
	default:
		return "other"
	}
}

func (o *origin) count(k string) {
	o.mu.Lock()
	o.counts[k]++
	o.mu.Unlock()
}

// take returns the counts since the last take.
func (o *origin) take() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.counts
	o.counts = map[string]int{}
	return c
}

type phase struct {
	name        string
	counts      map[string]int
	first, rest []time.Duration // manifest-by-tag latency of each client; of its blob requests
}

func run(n int, ttl time.Duration, out string) error {
	o := &origin{inner: registry.New(registry.Logger(log.New(io.Discard, "", 0))), users: map[string]string{}, counts: map[string]int{}}
	for i := range n {
		o.users[fmt.Sprintf("user%d", i)] = fmt.Sprintf("secret-%d", i)
	}
	o.users["node"] = "node-secret"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: o}
	go srv.Serve(ln)
	defer srv.Close()
	host := ln.Addr().String()

	// Two images, so that the node without credentials holds none of the private one's blobs.
	blobs := map[string][]string{}
	for _, repo := range []string{"private/app", "public/app"} {
		img, err := random.Image(256<<10, 3)
		if err != nil {
			return err
		}
		ref, _ := name.ParseReference(host+"/"+repo+":v1", name.Insecure)
		if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "node", Password: "node-secret"})); err != nil {
			return err
		}
		if blobs[repo], err = blobDigests(img); err != nil {
			return err
		}
	}
	o.take()

	dir, err := os.MkdirTemp("", "shoal-bench-private-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfgPath := dir + "/config.json"
	auth := base64.StdEncoding.EncodeToString([]byte("node:node-secret"))
	if err := os.WriteFile(cfgPath, []byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		return err
	}
	start := func(sub, dockerConfig string, boot []string) (*agent.Agent, string, func(), error) {
		a, err := agent.New(agent.Config{DataDir: dir + "/" + sub, Registries: []string{"http://" + host}, DockerConfig: dockerConfig,
			PrivateAccessTTL: ttl, ChunkSize: 1 << 20,
			P2P: &p2p.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: boot}})
		if err != nil {
			return nil, "", nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			cancel()
			return nil, "", nil, err
		}
		go func() { done <- a.Serve(ctx, l) }()
		stop := func() { cancel(); <-done; a.Close() }
		return a, l.Addr().String(), stop, nil
	}
	holder, holderAddr, stopHolder, err := start("holder", cfgPath, nil)
	if err != nil {
		return err
	}
	defer stopHolder()
	_, bareAddr, stopBare, err := start("bare", "", holder.Node().Addrs())
	if err != nil {
		return err
	}
	defer stopBare()

	var report []phase
	pullAll := func(name, node, repo string) {
		report = append(report, pull(name, node, repo, n, blobs[repo], o))
	}
	// Warm the holder's store, and the node without credentials' privacy probe, so that every
	// phase below measures authorization, not transfer.
	for _, repo := range []string{"private/app", "public/app"} {
		if err := warm(holderAddr, repo, blobs[repo], "Basic "+auth); err != nil {
			return err
		}
	}
	if err := warm(bareAddr, "public/app", blobs["public/app"], ""); err != nil {
		return err
	}
	o.take()
	pullAll("public repository, holder", holderAddr, "public/app")
	pullAll("public repository, node without credentials", bareAddr, "public/app")
	time.Sleep(ttl + 100*time.Millisecond) // the warm-up's decision expires
	pullAll("private, holder: first pull of each client", holderAddr, "private/app")
	pullAll("private, holder: second pull, within the TTL", holderAddr, "private/app")
	time.Sleep(ttl + 100*time.Millisecond)
	pullAll("private, holder: after the TTL", holderAddr, "private/app")
	time.Sleep(ttl + 100*time.Millisecond)
	pullAll("private, node without credentials (content from the holder): first pull", bareAddr, "private/app")
	pullAll("private, node without credentials: second pull, within the TTL", bareAddr, "private/app")
	return write(out, n, ttl, report)
}

func blobDigests(img v1.Image) ([]string, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	ds := []string{m.Config.Digest.String()}
	for _, l := range m.Layers {
		ds = append(ds, l.Digest.String())
	}
	return ds, nil
}

func warm(node, repo string, blobs []string, auth string) error {
	if _, err := get(node, "/v2/"+repo+"/manifests/v1", auth); err != nil {
		return err
	}
	for _, b := range blobs {
		if _, err := get(node, "/v2/"+repo+"/blobs/"+b, auth); err != nil {
			return err
		}
	}
	return nil
}

// pull has every client get the manifest by tag, then the blobs, at once.
func pull(name, node, repo string, n int, blobs []string, o *origin) phase {
	ph := phase{name: name}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			auth := ""
			if strings.HasPrefix(repo, "private/") {
				auth = "Basic " + base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "user%d:secret-%d", i, i))
			}
			d, err := get(node, "/v2/"+repo+"/manifests/v1", auth)
			if err != nil {
				log.Fatalf("%s: client %d: %v", name, i, err)
			}
			var rest []time.Duration
			for _, b := range blobs {
				bd, err := get(node, "/v2/"+repo+"/blobs/"+b, auth)
				if err != nil {
					log.Fatalf("%s: client %d: %v", name, i, err)
				}
				rest = append(rest, bd)
			}
			mu.Lock()
			ph.first = append(ph.first, d)
			ph.rest = append(ph.rest, rest...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	ph.counts = o.take()
	return ph
}

func get(node, path, auth string) (time.Duration, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+node+path, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return time.Since(start), nil
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

func write(out string, n int, ttl time.Duration, phases []phase) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d clients, each with its own credential, pull one image (manifest by tag, config, 2 layers of 256 KiB) at once; `--private-access-ttl` %s.\n\n", n, ttl)
	b.WriteString("| phase | origin requests (by kind) | manifest by tag p50 / max | blob p50 / max |\n|---|---|---|---|\n")
	for _, ph := range phases {
		var kinds []string
		for k, v := range ph.counts {
			kinds = append(kinds, fmt.Sprintf("%s: %d", k, v))
		}
		slices.Sort(kinds)
		counts := strings.Join(kinds, ", ")
		if counts == "" {
			counts = "none"
		}
		fmt.Fprintf(&b, "| %s | %s | %s / %s | %s / %s |\n", ph.name, counts,
			pct(ph.first, 0.5).Round(10*time.Microsecond), pct(ph.first, 1).Round(10*time.Microsecond),
			pct(ph.rest, 0.5).Round(10*time.Microsecond), pct(ph.rest, 1).Round(10*time.Microsecond))
	}
	if out == "" {
		_, err := os.Stdout.WriteString(b.String())
		return err
	}
	return os.WriteFile(out, []byte(b.String()), 0o644)
}
