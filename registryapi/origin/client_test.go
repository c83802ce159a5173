package origin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testRepo = "test/img"

// testOrigin is a real ggcr registry. Tests push to it directly and read from it through srv,
// which serves the registry behind an optional fault-injecting wrapper.
type testOrigin struct {
	srv    *httptest.Server
	reg    *Registry
	direct string // host of the unwrapped registry, for pushing
}

func startOrigin(t *testing.T, wrap func(http.Handler) http.Handler) *testOrigin {
	t.Helper()
	h := registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0)))
	direct := httptest.NewServer(h)
	t.Cleanup(direct.Close)
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	reg, err := ParseRegistry(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &testOrigin{srv: srv, reg: reg, direct: strings.TrimPrefix(direct.URL, "http://")}
}

// push writes img to repo:tag and returns its manifest digest.
func (o *testOrigin) push(t *testing.T, repo, tag string, img v1.Image) digest.Digest {
	t.Helper()
	ref, err := name.NewTag(o.direct + "/" + repo + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(d.String())
}

func dockerImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func ociImage(t *testing.T) v1.Image {
	t.Helper()
	l, err := random.Layer(1024, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
}

func layerDigest(t *testing.T, img v1.Image) (digest.Digest, []byte) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ls[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ls[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(d.String()), b
}

var fastRetry = transport.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 3}

func newClient(t *testing.T, opts ...Option) *Client {
	t.Helper()
	c, err := NewClient(append([]Option{WithRetryBackoff(fastRetry)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// onPath wraps next so that fault answers requests whose path contains part, and next the rest
// (the ping at /v2/ among them, unless part matches it).
func onPath(part string, fault http.HandlerFunc) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, part) {
				fault(w, r)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

type observation struct {
	registry, op string
	status       int
	err          error
}

type recorder struct {
	mu  sync.Mutex
	obs []observation
}

func (r *recorder) OriginRequest(registry, op string, status int, err error, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs = append(r.obs, observation{registry, op, status, err})
}

func (r *recorder) last() observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.obs[len(r.obs)-1]
}

func TestPull(t *testing.T) {
	t.Parallel()
	var accept atomic.Value
	o := startOrigin(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") {
				accept.Store(r.Header.Get("Accept"))
			}
			next.ServeHTTP(w, r)
		})
	})
	rec := &recorder{}
	c := newClient(t, WithObserver(rec))
	ctx := t.Context()

	for _, tc := range []struct {
		name string
		img  v1.Image
		mt   types.MediaType
	}{
		{name: "docker", img: dockerImage(t), mt: types.DockerManifestSchema2},
		{name: "oci", img: ociImage(t), mt: types.OCIManifestSchema1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := o.push(t, testRepo, tc.name, tc.img)
			raw, err := tc.img.RawManifest()
			if err != nil {
				t.Fatal(err)
			}
			acc := []string{string(tc.mt), string(types.OCIImageIndex)}

			for _, ref := range []string{tc.name, want.String()} {
				m, err := c.GetManifest(ctx, o.reg, testRepo, ref, acc)
				if err != nil {
					t.Fatalf("GetManifest(%s): %v", ref, err)
				}
				if m.Digest != want || m.MediaType != string(tc.mt) || !bytes.Equal(m.Body, raw) {
					t.Errorf("GetManifest(%s) = %s %s, want %s %s", ref, m.MediaType, m.Digest, tc.mt, want)
				}
				if got := accept.Load(); got != strings.Join(acc, ", ") {
					t.Errorf("origin saw Accept %q", got)
				}
				if ob := rec.last(); ob != (observation{o.reg.Host(), "manifest", 200, nil}) {
					t.Errorf("observed %+v", ob)
				}

				desc, err := c.HeadManifest(ctx, o.reg, testRepo, ref, acc)
				if err != nil {
					t.Fatalf("HeadManifest(%s): %v", ref, err)
				}
				if desc != (Descriptor{MediaType: string(tc.mt), Digest: want, Size: int64(len(raw))}) {
					t.Errorf("HeadManifest(%s) = %+v", ref, desc)
				}
			}

			ld, lb := layerDigest(t, tc.img)
			size, err := c.HeadBlob(ctx, o.reg, testRepo, ld)
			if err != nil || size != int64(len(lb)) {
				t.Fatalf("HeadBlob = %d, %v; want %d", size, err, len(lb))
			}
			body, size, err := c.GetBlob(ctx, o.reg, testRepo, ld)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(body)
			body.Close()
			if err != nil || size != int64(len(lb)) || !bytes.Equal(got, lb) {
				t.Fatalf("GetBlob = %d bytes, size %d, %v; want %d", len(got), size, err, len(lb))
			}
		})
	}

	tags, err := c.Tags(ctx, o.reg, testRepo, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Tags []string }
	if err := json.Unmarshal(tags.Body, &list); err != nil || tags.Status != 200 || strings.Join(list.Tags, ",") != "docker,oci" {
		t.Errorf("Tags = %d %s, %v", tags.Status, tags.Body, err)
	}
	tags, err = c.Tags(ctx, o.reg, testRepo, 1, "docker")
	if err != nil || !strings.Contains(string(tags.Body), `"oci"`) || strings.Contains(string(tags.Body), `"docker"`) {
		t.Errorf("Tags(n=1, last=docker) = %+v, %v", tags, err)
	}

	seen := map[string]bool{}
	for _, ob := range rec.obs {
		seen[ob.op] = true
	}
	for _, op := range []string{"blob", "blob_head", "manifest", "manifest_head", "tags"} {
		if !seen[op] {
			t.Errorf("observer never saw %q", op)
		}
	}
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	var query atomic.Value
	o := startOrigin(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/referrers/") {
				query.Store(r.URL.RawQuery)
			}
			next.ServeHTTP(w, r)
		})
	})
	subject := ociImage(t)
	sd := o.push(t, testRepo, "v1", subject)
	desc, err := partialDescriptor(subject)
	if err != nil {
		t.Fatal(err)
	}
	sig := mutate.Subject(mutate.ConfigMediaType(ociImage(t), "application/vnd.shoal.sig"), desc).(v1.Image)
	sigDigest := o.push(t, testRepo, "sig", sig)

	c := newClient(t)
	p, err := c.Referrers(t.Context(), o.reg, testRepo, sd, "application/vnd.shoal.sig")
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != 200 || p.ContentType != string(types.OCIImageIndex) || !strings.Contains(string(p.Body), sigDigest.String()) {
		t.Errorf("Referrers = %d %s %s", p.Status, p.ContentType, p.Body)
	}
	if q := query.Load(); q != "artifactType=application%2Fvnd.shoal.sig" {
		t.Errorf("origin saw query %q", q)
	}

	p, err = c.Referrers(t.Context(), o.reg, "test/none", sd, "")
	if err != nil || p.Status != http.StatusNotFound {
		t.Errorf("Referrers(unknown repo) = %+v, %v; want a 404 passthrough", p, err)
	}
}

func partialDescriptor(img v1.Image) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	size, err := img.Size()
	return v1.Descriptor{MediaType: mt, Digest: d, Size: size}, err
}

func TestErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		wrap     func(http.Handler) http.Handler
		ref      string
		want     error
		status   int // of the *transport.Error, 0 for none
		attempts int32
	}{
		{name: "unknown tag", ref: "nope", want: errdefs.ErrNotFound, status: 404, attempts: 1},
		{name: "unauthorized without creds", wrap: func(http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.WriteHeader(http.StatusUnauthorized)
			})
		}, ref: "v1", want: errdefs.ErrDenied, status: 401},
		{name: "forbidden", wrap: onPath("/manifests/", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusForbidden)
		}), ref: "v1", want: errdefs.ErrDenied, status: 403, attempts: 1},
		{name: "rate limited", wrap: onPath("/manifests/", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTooManyRequests)
		}), ref: "v1", want: errdefs.ErrTooManyRequests, status: 429, attempts: 3},
		{name: "always 503", wrap: onPath("/manifests/", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"errors":[{"code":"UNAVAILABLE","message":"down"}]}`, http.StatusServiceUnavailable)
		}), ref: "v1", want: errdefs.ErrUnavailable, status: 503, attempts: 3},
		{name: "ping 502", wrap: onPath("/", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
		}), ref: "v1", want: errdefs.ErrUnavailable, status: 502},
		{name: "connection dropped", wrap: onPath("/manifests/", func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		}), ref: "v1", want: errdefs.ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var attempts atomic.Int32
			wrap := func(next http.Handler) http.Handler {
				if tc.wrap != nil {
					next = tc.wrap(next)
				}
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if strings.Contains(r.URL.Path, "/manifests/") {
						attempts.Add(1)
					}
					next.ServeHTTP(w, r)
				})
			}
			o := startOrigin(t, wrap)
			o.push(t, testRepo, "v1", dockerImage(t))
			rec := &recorder{}
			c := newClient(t, WithObserver(rec))

			_, err := c.GetManifest(t.Context(), o.reg, testRepo, tc.ref, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("GetManifest error = %v, want %v", err, tc.want)
			}
			var terr *transport.Error
			if errors.As(err, &terr) != (tc.status != 0) || (terr != nil && terr.StatusCode != tc.status) {
				t.Errorf("transport.Error = %v, want status %d", terr, tc.status)
			}
			if tc.attempts != 0 && attempts.Load() != tc.attempts {
				t.Errorf("origin saw %d manifest requests, want %d", attempts.Load(), tc.attempts)
			}
			if ob := rec.last(); ob.op != "manifest" || !errors.Is(ob.err, tc.want) {
				t.Errorf("observed %+v", ob)
			}
		})
	}
}

func TestBlobNotFound(t *testing.T) {
	t.Parallel()
	o := startOrigin(t, nil)
	o.push(t, testRepo, "v1", dockerImage(t))
	c := newClient(t)
	d := digest.FromString("missing")
	if _, _, err := c.GetBlob(t.Context(), o.reg, testRepo, d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetBlob = %v, want ErrNotFound", err)
	}
	if _, err := c.HeadBlob(t.Context(), o.reg, testRepo, d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("HeadBlob = %v, want ErrNotFound", err)
	}
	if _, err := c.HeadManifest(t.Context(), o.reg, testRepo, "nope", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("HeadManifest = %v, want ErrNotFound", err)
	}
}

func TestRetryThenSucceed(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	o := startOrigin(t, func(next http.Handler) http.Handler {
		return onPath("/blobs/", func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			next.ServeHTTP(w, r)
		})(next)
	})
	img := dockerImage(t)
	o.push(t, testRepo, "v1", img)
	ld, lb := layerDigest(t, img)
	c := newClient(t)
	body, _, err := c.GetBlob(t.Context(), o.reg, testRepo, ld)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if got, err := io.ReadAll(body); err != nil || !bytes.Equal(got, lb) {
		t.Fatalf("GetBlob read %d bytes, %v", len(got), err)
	}
	if n.Load() != 2 {
		t.Errorf("origin saw %d blob requests, want 2", n.Load())
	}
}

// tokenAuth wraps a registry with Docker's token flow on the same host: /token hands out "tok"
// (to user:pass only, when basic is set) and everything else wants it as a bearer token. The
// token endpoint shares the registry's host because ggcr refuses a realm on any other loopback
// address (its guard against SSRF through the realm).
func tokenAuth(basic bool, tokens *atomic.Int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" {
				u, p, ok := r.BasicAuth()
				if basic && (!ok || u != "user" || p != "pass") {
					http.Error(w, "bad credentials", http.StatusUnauthorized)
					return
				}
				if r.URL.Query().Get("service") != "test" || r.URL.Query().Get("scope") != "repository:"+testRepo+":pull" {
					http.Error(w, "bad scope "+r.URL.RawQuery, http.StatusBadRequest)
					return
				}
				tokens.Add(1)
				fmt.Fprint(w, `{"token":"tok","expires_in":300}`)
				return
			}
			if r.Header.Get("Authorization") != "Bearer tok" {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test",scope="repository:%s:pull"`, r.Host, testRepo))
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func basicAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "pass" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeDockerConfig(t *testing.T, host string) string {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte("user:pass"))
	path := filepath.Join(t.TempDir(), "config.json")
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAuth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		wrap   func(tokens *atomic.Int32) func(http.Handler) http.Handler
		creds  bool
		tokens int32
		want   error
	}{
		{name: "anonymous bearer token", wrap: func(n *atomic.Int32) func(http.Handler) http.Handler { return tokenAuth(false, n) }, tokens: 1},
		{name: "basic at token server", wrap: func(n *atomic.Int32) func(http.Handler) http.Handler { return tokenAuth(true, n) }, creds: true, tokens: 1},
		{name: "token server refuses anonymous", wrap: func(n *atomic.Int32) func(http.Handler) http.Handler { return tokenAuth(true, n) }, want: errdefs.ErrDenied},
		{name: "basic", wrap: func(*atomic.Int32) func(http.Handler) http.Handler { return basicAuth }, creds: true},
		{name: "basic without creds", wrap: func(*atomic.Int32) func(http.Handler) http.Handler { return basicAuth }, want: errdefs.ErrDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var tokens atomic.Int32
			o := startOrigin(t, tc.wrap(&tokens))
			img := dockerImage(t)
			want := o.push(t, testRepo, "v1", img)
			var opts []Option
			if tc.creds {
				opts = append(opts, WithDockerConfig(writeDockerConfig(t, o.reg.Host())))
			}
			c := newClient(t, opts...)
			for range 3 { // one token serves them all
				m, err := c.GetManifest(t.Context(), o.reg, testRepo, "v1", nil)
				if !errors.Is(err, tc.want) {
					t.Fatalf("GetManifest = %v, want %v", err, tc.want)
				}
				if err == nil && m.Digest != want {
					t.Fatalf("GetManifest digest %s, want %s", m.Digest, want)
				}
			}
			if tokens.Load() != tc.tokens {
				t.Errorf("token server issued %d tokens, want %d", tokens.Load(), tc.tokens)
			}
		})
	}
}

func TestDockerConfig(t *testing.T) {
	t.Parallel()
	if _, err := NewClient(WithDockerConfig(filepath.Join(t.TempDir(), "missing.json"))); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("NewClient with a missing docker config = %v, want ErrInvalid", err)
	}
	bad := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(bad, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(WithDockerConfig(bad)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("NewClient with a malformed docker config = %v, want ErrInvalid", err)
	}

	kc := &dockerConfig{path: writeDockerConfig(t, "https://index.docker.io/v1/")}
	for _, tc := range []struct {
		host string
		anon bool
	}{
		{host: "registry-1.docker.io"},
		{host: "index.docker.io"},
		{host: "ghcr.io", anon: true},
	} {
		reg, err := name.NewRegistry(tc.host)
		if err != nil {
			t.Fatal(err)
		}
		auth, err := kc.Resolve(reg.Repo("library/alpine"))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := auth.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Username == "user" && cfg.Password == "pass"; got == tc.anon {
			t.Errorf("%s: credentials %+v", tc.host, cfg)
		}
	}
}

func TestRedirectToStorage(t *testing.T) {
	t.Parallel()
	img := dockerImage(t)
	ld, lb := layerDigest(t, img)
	var storageAuth atomic.Value
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageAuth.Store(r.Header.Get("Authorization"))
		w.Write(lb)
	}))
	t.Cleanup(storage.Close)
	var registryAuth atomic.Value
	o := startOrigin(t, func(next http.Handler) http.Handler {
		return basicAuth(onPath("/blobs/", func(w http.ResponseWriter, r *http.Request) {
			registryAuth.Store(r.Header.Get("Authorization"))
			http.Redirect(w, r, storage.URL+"/bucket/"+ld.Encoded()+"?sig=x", http.StatusTemporaryRedirect)
		})(next))
	})
	o.push(t, testRepo, "v1", img)
	c := newClient(t, WithDockerConfig(writeDockerConfig(t, o.reg.Host())))

	body, size, err := c.GetBlob(t.Context(), o.reg, testRepo, ld)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	got, err := io.ReadAll(body)
	if err != nil || !bytes.Equal(got, lb) || size != int64(len(lb)) {
		t.Fatalf("GetBlob read %d bytes (size %d), %v", len(got), size, err)
	}
	if a, _ := registryAuth.Load().(string); !strings.HasPrefix(a, "Basic ") {
		t.Errorf("registry saw Authorization %q", a)
	}
	if a := storageAuth.Load(); a != "" {
		t.Errorf("object storage saw Authorization %q", a)
	}
}

func TestStallTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	o := startOrigin(t, onPath("/blobs/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("0123456789"))
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release) }) // runs before the server closes
	c := newClient(t, WithStallTimeout(200*time.Millisecond))

	body, size, err := c.GetBlob(t.Context(), o.reg, testRepo, digest.FromString("slow"))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if size != 1000 {
		t.Errorf("size = %d, want 1000", size)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(body)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("read error = %v, want ErrUnavailable", err)
		}
		t.Logf("stalled read failed after %s: %v", time.Since(start), err)
	case <-time.After(20 * time.Second):
		t.Fatal("stalled read did not fail")
	}
}

func TestManifestLimits(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte(" "), oci.MaxManifestSize+1)
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		ref     func(d digest.Digest) string
		want    error
	}{
		{name: "too large with length", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
			w.Write(big)
		}, want: errdefs.ErrTooLarge},
		{name: "too large chunked", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
			for i := 0; i < len(big); i += 1 << 20 {
				w.Write(big[i:min(i+1<<20, len(big))])
				http.NewResponseController(w).Flush()
			}
		}, want: errdefs.ErrTooLarge},
		{name: "wrong bytes for digest", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
			fmt.Fprint(w, `{"schemaVersion":2}`)
		}, ref: func(d digest.Digest) string { return d.String() }, want: errdefs.ErrDigestMismatch},
		{name: "media type from body", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			fmt.Fprint(w, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := startOrigin(t, onPath("/manifests/", tc.handler))
			c := newClient(t)
			ref := "v1"
			if tc.ref != nil {
				ref = tc.ref(digest.FromString("expected"))
			}
			m, err := c.GetManifest(t.Context(), o.reg, testRepo, ref, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("GetManifest = %v, want %v", err, tc.want)
			}
			if err == nil && m.MediaType != string(types.OCIImageIndex) {
				t.Errorf("media type %q", m.MediaType)
			}
		})
	}
}

func TestHeadManifestWithoutDigest(t *testing.T) {
	t.Parallel()
	o := startOrigin(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(stripDigest{w}, r)
		})
	})
	o.push(t, testRepo, "v1", dockerImage(t))
	c := newClient(t)
	if _, err := c.HeadManifest(t.Context(), o.reg, testRepo, "v1", nil); !errors.Is(err, errdefs.ErrUnsupported) {
		t.Errorf("HeadManifest = %v, want ErrUnsupported", err)
	}
}

type stripDigest struct{ http.ResponseWriter }

func (s stripDigest) WriteHeader(code int) {
	s.Header().Del("Docker-Content-Digest")
	s.ResponseWriter.WriteHeader(code)
}

func TestPassthrough(t *testing.T) {
	t.Parallel()
	var mode atomic.Value
	mode.Store("")
	o := startOrigin(t, onPath("/tags/list", func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "503":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "401":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Link", fmt.Sprintf(`<http://%s/v2/%s/tags/list?last=b&n=2>; rel="next"`, r.Host, testRepo))
			fmt.Fprint(w, `{"name":"test/img","tags":["a","b"]}`)
		}
	}))
	c := newClient(t)

	p, err := c.Tags(t.Context(), o.reg, testRepo, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := `</v2/test/img/tags/list?last=b&n=2>; rel="next"`; p.Status != 200 || p.Link != want || p.ContentType != "application/json" {
		t.Errorf("Tags = %d %q %q", p.Status, p.ContentType, p.Link)
	}
	mode.Store("401")
	if p, err := c.Tags(t.Context(), o.reg, testRepo, 0, ""); err != nil || p.Status != 401 || !strings.Contains(string(p.Body), "UNAUTHORIZED") {
		t.Errorf("Tags(401) = %+v, %v; want a 401 passthrough", p, err)
	}
	mode.Store("503")
	if _, err := c.Tags(t.Context(), o.reg, testRepo, 0, ""); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Tags(503) = %v, want ErrUnavailable", err)
	}
}

func TestLocalLinks(t *testing.T) {
	t.Parallel()
	plain, err := ParseUpstream("https://reg.example:5000")
	if err != nil {
		t.Fatal(err)
	}
	alias, err := ParseUpstream("docker.io=https://reg.example:5000/hub-proxy")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in, want string
		reg            *Registry
	}{
		{name: "empty", in: "", want: ""},
		{name: "alias prefix", reg: alias, in: `<https://reg.example:5000/v2/hub-proxy/library/a/tags/list?last=x>; rel="next"`, want: `</v2/library/a/tags/list?last=x>; rel="next"`},
		{name: "alias relative", reg: alias, in: `</v2/hub-proxy/a/tags/list?last=x>; rel="next"`, want: `</v2/a/tags/list?last=x>; rel="next"`},
		{name: "relative", in: `</v2/a/tags/list?n=1&last=x>; rel="next"`, want: `</v2/a/tags/list?n=1&last=x>; rel="next"`},
		{name: "origin host", in: `<https://Reg.example:5000/v2/a/tags/list?last=x>; rel="next"`, want: `</v2/a/tags/list?last=x>; rel="next"`},
		{name: "other host", in: `<https://cdn.example/v2/a?x=1>; rel="next"`, want: `<https://cdn.example/v2/a?x=1>; rel="next"`},
		{name: "two links", in: `<https://reg.example:5000/p?1>; rel="next", <https://reg.example:5000/p?0>; rel="prev"`, want: `</p?1>; rel="next", </p?0>; rel="prev"`},
		{name: "unterminated", in: `<https://reg.example:5000/p`, want: `<https://reg.example:5000/p`},
	} {
		if tc.reg == nil {
			tc.reg = plain
		}
		if got := localLinks(tc.in, tc.reg); got != tc.want {
			t.Errorf("%s: localLinks(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestTransportCache(t *testing.T) {
	t.Parallel()
	var pings, failPings atomic.Int32
	o := startOrigin(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/" {
				pings.Add(1)
				if failPings.Add(-1) >= 0 {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	})
	o.push(t, testRepo, "v1", dockerImage(t))
	o.push(t, "test/other", "v1", dockerImage(t))
	c := newClient(t)

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := c.HeadManifest(t.Context(), o.reg, testRepo, "v1", nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if _, err := c.HeadManifest(t.Context(), o.reg, "test/other", "v1", nil); err != nil {
		t.Fatal(err)
	}
	if n := pings.Load(); n != 2 {
		t.Errorf("%d pings for two repositories, want 2", n)
	}

	// A failed ping is not cached: the next call pings again.
	c = newClient(t)
	pings.Store(0)
	failPings.Store(int32(fastRetry.Steps))
	if _, err := c.HeadManifest(t.Context(), o.reg, testRepo, "v1", nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("HeadManifest with the ping failing = %v, want ErrUnavailable", err)
	}
	if _, err := c.HeadManifest(t.Context(), o.reg, testRepo, "v1", nil); err != nil {
		t.Fatalf("HeadManifest after the ping recovered: %v", err)
	}
	if n := pings.Load(); n != int32(fastRetry.Steps)+1 {
		t.Errorf("%d pings, want %d", n, fastRetry.Steps+1)
	}
}

func TestHTTPS(t *testing.T) {
	t.Parallel()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tlsSrv := httptest.NewTLSServer(h)
	t.Cleanup(tlsSrv.Close)
	reg, err := ParseRegistry(tlsSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, WithBaseTransport(tlsSrv.Client().Transport))
	if _, err := c.GetManifest(t.Context(), reg, testRepo, "v1", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetManifest over TLS = %v, want ErrNotFound from the registry", err)
	}

	// A registry configured as https is never spoken to in plain HTTP, even on loopback where
	// ggcr's ping would fall back to it.
	var requests atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(plain.Close)
	reg, err = ParseRegistry(strings.Replace(plain.URL, "http://", "https://", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newClient(t).GetManifest(t.Context(), reg, testRepo, "v1", nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("GetManifest = %v, want ErrUnavailable", err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("plain-HTTP server got %d requests", n)
	}
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	reg, err := ParseRegistry("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	c := newClient(t, WithObserver(rec))
	ctx := context.Background()
	d := digest.FromString("x")
	for name, err := range map[string]error{
		"repo with ..":  func() error { _, err := c.HeadManifest(ctx, reg, "a/../b", "v1", nil); return err }(),
		"upper repo":    func() error { _, _, err := c.GetBlob(ctx, reg, "A", d); return err }(),
		"bad digest":    func() error { _, err := c.HeadBlob(ctx, reg, "a", "sha256:zz"); return err }(),
		"bad tag":       func() error { _, err := c.GetManifest(ctx, reg, "a", "-v1", nil); return err }(),
		"tag with /":    func() error { _, err := c.GetManifest(ctx, reg, "a", "v1/x", nil); return err }(),
		"referrers tag": func() error { _, err := c.Referrers(ctx, reg, "a", "v1", ""); return err }(),
	} {
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if len(rec.obs) != 0 {
		t.Errorf("observed %d requests for invalid input", len(rec.obs))
	}
}
