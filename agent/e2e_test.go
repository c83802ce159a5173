package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/devregistry"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// node is an agent serving on 127.0.0.1 for one test.
type node struct {
	*agent.Agent
	host string
	dir  string
	stop func()
}

// fastOrigin keeps tests quick when the origin is down on purpose: no slow backoff.
var fastOrigin = []origin.Option{
	origin.WithRetryBackoff(transport.Backoff{Duration: 10 * time.Millisecond, Factor: 1, Steps: 2}),
	origin.WithStallTimeout(5 * time.Second),
}

func startAgent(t *testing.T, dir string, registries ...string) *node {
	t.Helper()
	return startAgentConfig(t, agent.Config{DataDir: dir, Registries: registries})
}

func startAgentConfig(t *testing.T, cfg agent.Config) *node {
	t.Helper()
	dir := cfg.DataDir
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.OriginOptions = fastOrigin
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", dir[len(dir)-4:])
	}
	a, err := agent.New(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	var once sync.Once
	n := &node{Agent: a, host: ln.Addr().String(), dir: dir}
	n.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		})
	}
	t.Cleanup(n.stop)
	return n
}

func startOrigin(t *testing.T) *devregistry.Registry {
	t.Helper()
	o, err := devregistry.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func push(t *testing.T, o *devregistry.Registry, repoTag string, content any) {
	t.Helper()
	if err := devregistry.Push(o.Host()+"/"+repoTag, content); err != nil {
		t.Fatal(err)
	}
}

func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sameImage checks that the image read through the mirror equals the origin's byte for byte:
// manifest, config and every layer.
func sameImage(t *testing.T, got, want v1.Image) {
	t.Helper()
	gm, err := got.RawManifest()
	if err != nil {
		t.Fatalf("manifest through the agent: %v", err)
	}
	wm, _ := want.RawManifest()
	if !bytes.Equal(gm, wm) {
		t.Fatalf("manifest differs")
	}
	gc, err := got.RawConfigFile()
	if err != nil {
		t.Fatalf("config through the agent: %v", err)
	}
	wc, _ := want.RawConfigFile()
	if !bytes.Equal(gc, wc) {
		t.Fatalf("config differs")
	}
	gl, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	wl, _ := want.Layers()
	if len(gl) != len(wl) {
		t.Fatalf("%d layers, want %d", len(gl), len(wl))
	}
	for i := range gl {
		if !bytes.Equal(layerBytes(t, gl[i]), layerBytes(t, wl[i])) {
			t.Fatalf("layer %d differs", i)
		}
	}
}

func layerBytes(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading layer: %v", err)
	}
	return b
}

func TestPullThroughMirror(t *testing.T) {
	o := startOrigin(t)
	a := startAgent(t, t.TempDir(), o.URL())

	ociImg, err := devregistry.Image([]int64{1 << 20, 300 << 10}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	dockerImg, err := devregistry.Image([]int64{512 << 10, 64 << 10}, true, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	idx, err := devregistry.Index([]int64{256 << 10}, "linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/oci:v1", ociImg)
	push(t, o, "test/docker:v1", dockerImg)
	push(t, o, "test/multi:v1", idx)

	for _, tc := range []struct {
		name string
		repo string
		img  v1.Image
	}{
		{"oci image", "test/oci", ociImg},
		{"docker schema 2 image", "test/docker", dockerImg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := tc.img.Digest()
			for _, r := range []string{a.host + "/" + tc.repo + ":v1", a.host + "/" + tc.repo + "@" + d.String()} {
				got, err := remote.Image(ref(t, r))
				if err != nil {
					t.Fatalf("pull %s: %v", r, err)
				}
				gd, _ := got.Digest()
				if gd != d {
					t.Fatalf("pull %s: digest %s, want %s", r, gd, d)
				}
				mt, _ := got.MediaType()
				wmt, _ := tc.img.MediaType()
				if mt != wmt {
					t.Fatalf("media type %s, want %s", mt, wmt)
				}
				sameImage(t, got, tc.img)
			}
		})
	}

	t.Run("multi-arch index", func(t *testing.T) {
		wantDigest, _ := idx.Digest()
		for _, r := range []string{a.host + "/test/multi:v1", a.host + "/test/multi@" + wantDigest.String()} {
			got, err := remote.Index(ref(t, r))
			if err != nil {
				t.Fatalf("pull %s: %v", r, err)
			}
			gm, _ := got.RawManifest()
			wm, _ := idx.RawManifest()
			if !bytes.Equal(gm, wm) {
				t.Fatal("index differs")
			}
			im, _ := idx.IndexManifest()
			for _, desc := range im.Manifests {
				child, err := got.Image(desc.Digest)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := idx.Image(desc.Digest)
				sameImage(t, child, want)
			}
		}
		// A client that asks for one platform through the mirror gets that platform's image.
		img, err := remote.Image(ref(t, a.host+"/test/multi:v1"), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))
		if err != nil {
			t.Fatal(err)
		}
		cf, _ := img.ConfigFile()
		if cf.Architecture != "arm64" {
			t.Fatalf("architecture %s, want arm64", cf.Architecture)
		}
	})
}

func TestConcurrentPullsFetchEachBlobOnce(t *testing.T) {
	o := startOrigin(t)
	a := startAgent(t, t.TempDir(), o.URL())
	img, err := devregistry.Image([]int64{4 << 20, 1 << 20, 128 << 10}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/app:v1", img)
	o.ResetCounts()

	const clients = 50
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := remote.Image(ref(t, a.host+"/test/app:v1"))
			if err != nil {
				errs <- err
				return
			}
			layers, err := got.Layers()
			if err != nil {
				errs <- err
				return
			}
			if _, err := got.RawConfigFile(); err != nil {
				errs <- err
				return
			}
			for _, l := range layers {
				rc, err := l.Compressed()
				if err != nil {
					errs <- err
					return
				}
				_, err = io.Copy(io.Discard, rc) // ggcr verifies the digest on read
				rc.Close()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	cfgName, _ := img.ConfigName()
	blobs := []string{cfgName.String()}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		blobs = append(blobs, d.String())
	}
	for _, b := range blobs {
		if n := o.BlobGets(b); n != 1 {
			t.Errorf("origin saw %d GETs of blob %s, want 1", n, b)
		}
	}
	if n := o.Count(http.MethodGet, "/v2/test/app/manifests/v1"); n > 1 {
		t.Errorf("origin saw %d GETs of the tag, want at most 1", n)
	}
}

func TestRestartServesWithoutOrigin(t *testing.T) {
	o := startOrigin(t)
	dir := t.TempDir()
	a := startAgent(t, dir, o.URL())
	img, err := devregistry.Image([]int64{1 << 20, 1 << 20}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/app:v1", img)
	if _, err := remote.Image(ref(t, a.host+"/test/app:v1")); err != nil {
		t.Fatal(err)
	}
	got, _ := remote.Image(ref(t, a.host+"/test/app:v1"))
	sameImage(t, got, img)

	a.stop()
	o.Close()
	// Same data directory, origin gone: the registry URL still points at the dead origin, and
	// the tag TTL is short so the tag must be resolved again.
	time.Sleep(5 * time.Millisecond)
	b := startAgentConfig(t, agent.Config{DataDir: dir, Registries: []string{o.URL()}, TagTTL: time.Millisecond})
	d, _ := img.Digest()
	for _, r := range []string{b.host + "/test/app@" + d.String(), b.host + "/test/app:v1"} {
		got, err := remote.Image(ref(t, r))
		if err != nil {
			t.Fatalf("pull %s after restart with the origin down: %v", r, err)
		}
		sameImage(t, got, img)
	}
	if v := counter(t, b.Gatherer(), "shoal_stale_tag_resolutions_total", ""); v < 1 {
		t.Errorf("stale tag resolutions = %v, want ≥ 1", v)
	}
}

func TestCorruptOriginStoresNothing(t *testing.T) {
	o := startOrigin(t)
	dir := t.TempDir()
	a := startAgent(t, dir, o.URL())
	img, err := devregistry.Image([]int64{2 << 20}, false, "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/app:v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	o.Corrupt(ld.String(), true)

	got, err := remote.Image(ref(t, a.host+"/test/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	gl, _ := got.Layers()
	rc, err := gl[0].Compressed()
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
	}
	if err == nil {
		t.Fatal("pull of a corrupted layer succeeded")
	}
	blobPath := filepath.Join(dir, "blobs", "sha256", ld.Hex)
	if _, err := os.Stat(blobPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("corrupt blob was stored (stat: %v)", err)
	}
	waitFor(t, func() bool { return emptyDir(t, filepath.Join(dir, "tmp")) }, "temporary files to be removed")
	if v := counter(t, a.Gatherer(), "shoal_verification_failures_total", "origin"); v != 1 {
		t.Errorf("verification failures = %v, want 1", v)
	}

	o.Corrupt(ld.String(), false)
	got, err = remote.Image(ref(t, a.host+"/test/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, got, img)
	waitFor(t, func() bool { _, err := os.Stat(blobPath); return err == nil }, "the healthy blob to be committed")
}

// TestStreamsBeforeOriginFinishes shows the client's first bytes do not wait for the whole blob:
// the origin sends part of a blob (an odd amount, not a multiple of any buffer) and stalls, and
// the client still receives that part.
func TestStreamsBeforeOriginFinishes(t *testing.T) {
	const size = 4 << 20
	const part = 1_000_003
	blob := bytes.Repeat([]byte("shoal!"), size/6+1)[:size]
	d := digestOf(blob)
	o := startPausedOrigin(t, digest.Digest(d), blob, part)

	a := startAgent(t, t.TempDir(), o.URL)
	resp, err := http.Get("http://" + a.host + "/v2/test/slow/blobs/" + d)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != size {
		t.Fatalf("status %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	first := make([]byte, part)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("first part while the origin stalls: %v", err)
	}
	if !bytes.Equal(first, blob[:part]) {
		t.Fatal("first part differs")
	}
	// A second client joins the same fetch instead of asking the origin again.
	resp2, err := http.Get("http://" + a.host + "/v2/test/slow/blobs/" + d)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	o.release()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(rest, blob[part:]) {
		t.Fatalf("the rest: %v", err)
	}
	all, err := io.ReadAll(resp2.Body)
	if err != nil || !bytes.Equal(all, blob) {
		t.Fatalf("joined client: %v", err)
	}
	if n := o.gets.Load(); n != 1 {
		t.Fatalf("origin saw %d GETs, want 1", n)
	}
}

// TestUnconfiguredRegistryMakesNoConnection: a request whose ns names a registry that is not
// configured is refused without any outbound connection.
func TestUnconfiguredRegistryMakesNoConnection(t *testing.T) {
	o := startOrigin(t)
	var conns atomic.Int32
	other, _ := net.Listen("tcp", "127.0.0.1:0")
	t.Cleanup(func() { other.Close() })
	go func() {
		for {
			c, err := other.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	a := startAgent(t, t.TempDir(), o.URL())
	for _, p := range []string{
		"/v2/library/alpine/manifests/latest?ns=" + other.Addr().String(),
		"/v2/library/alpine/blobs/sha256:" + strings.Repeat("a", 64) + "?ns=" + other.Addr().String(),
		"/v2/library/alpine/tags/list?ns=" + other.Addr().String(),
		"/v2/library/alpine/manifests/latest?ns=docker.io",
	} {
		resp, err := http.Get("http://" + a.host + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"NAME_UNKNOWN"`) {
			t.Errorf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("unconfigured registry received %d connections", n)
	}
	if n := len(o.Requests()); n != 0 {
		t.Fatalf("configured origin received requests: %v", o.Requests())
	}
}

func TestColdRangeRequest(t *testing.T) {
	o := startOrigin(t)
	a := startAgent(t, t.TempDir(), o.URL())
	img, err := devregistry.Image([]int64{1 << 20}, false, "")
	if err != nil {
		t.Fatal(err)
	}
	push(t, o, "test/app:v1", img)
	layers, _ := img.Layers()
	want := layerBytes(t, layers[0])
	d, _ := layers[0].Digest()
	for _, tc := range []struct {
		name, rng string
		off, end  int
	}{
		{"cold middle", "bytes=1000-1999", 1000, 2000},
		{"warm suffix", "bytes=-100", len(want) - 100, len(want)},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.host+"/v2/test/app/blobs/"+d.String(), nil)
		req.Header.Set("Range", tc.rng)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusPartialContent {
			t.Fatalf("%s: %d %v", tc.name, resp.StatusCode, err)
		}
		if !bytes.Equal(body, want[tc.off:tc.end]) {
			t.Fatalf("%s: wrong bytes", tc.name)
		}
		if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", tc.off, tc.end-1, len(want)) {
			t.Fatalf("%s: Content-Range %q", tc.name, cr)
		}
	}
}

// TestOversizedManifestRefused: an origin manifest over 4 MiB is refused with an OCI error.
func TestOversizedManifestRefused(t *testing.T) {
	big := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":"` + strings.Repeat("a", 4<<20) + `"}}`
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", digestOf([]byte(big)))
		if r.Method == http.MethodGet {
			io.WriteString(w, big)
		}
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	a := startAgent(t, t.TempDir(), "http://"+ln.Addr().String())
	resp, err := http.Get("http://" + a.host + "/v2/test/big/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode == 500 || !strings.Contains(string(body), `"errors"`) {
		t.Fatalf("oversized manifest: %d %.200s", resp.StatusCode, body)
	}
}

func digestOf(b []byte) string {
	h, _, _ := v1.SHA256(bytes.NewReader(b))
	return h.String()
}

func counter(t *testing.T, g prometheus.Gatherer, metric, source string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := source == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == source {
					match = true
				}
			}
			if match {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func emptyDir(t *testing.T, dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries) == 0
}

// pausedOrigin is an origin of one blob that sends the first part bytes of each GET, then waits
// for release (or the request's end) before the rest; gets counts the GETs.
type pausedOrigin struct {
	URL     string
	gets    atomic.Int32
	release func()
}

func startPausedOrigin(t *testing.T, d digest.Digest, data []byte, part int) *pausedOrigin {
	t.Helper()
	o := &pausedOrigin{}
	ch := make(chan struct{})
	var once sync.Once
	o.release = func() { once.Do(func() { close(ch) }) }
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()):
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Header().Set("Docker-Content-Digest", d.String())
			if r.Method == http.MethodHead {
				return
			}
			o.gets.Add(1)
			w.Write(data[:part])
			w.(http.Flusher).Flush()
			select {
			case <-ch:
			case <-r.Context().Done():
				return
			}
			w.Write(data[part:])
		default:
			http.NotFound(w, r)
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { o.release(); srv.Close() })
	o.URL = "http://" + ln.Addr().String()
	return o
}
