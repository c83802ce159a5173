package registryapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/registryapi/registrytest"
)

const (
	testRepo      = "library/alpine"
	testMediaType = "application/vnd.oci.image.manifest.v1+json"
	// leakMarker is put into backend errors; it must never reach a response.
	leakMarker = "open /tmp/shoal/blobs/sha256/LEAKED: permission denied"
)

// testBlob is 20 bytes, so ranges are easy to read.
var testBlob = []byte("0123456789abcdefghij")

// fixture is a registrytest.Backend holding one blob and one manifest tagged "latest" in testRepo.
type fixture struct {
	mem      *registrytest.Backend
	blob     digest.Digest
	manifest digest.Digest
	body     []byte
}

func newFixture() *fixture {
	f := &fixture{mem: registrytest.NewBackend(), body: []byte(`{"schemaVersion":2,"mediaType":"` + testMediaType + `"}`)}
	f.blob = f.mem.PutBlob(testBlob)
	f.manifest = f.mem.PutManifest(testRepo, "latest", testMediaType, f.body)
	return f
}

// recordingBackend wraps a Backend, counting every call and recording the last arguments. When
// err is set every call fails with it; blob, tags and referrers override the wrapped answers.
type recordingBackend struct {
	registryapi.Backend
	err       error
	blob      registryapi.Blob
	tags      *registryapi.Listing
	referrers *registryapi.Listing

	calls atomic.Int64
	opens atomic.Int64

	mu           sync.Mutex
	target       registryapi.Repository
	ref          string
	accept       []string
	n            int
	last         string
	artifactType string
}

func (b *recordingBackend) record(t registryapi.Repository, ref string) {
	b.calls.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.target, b.ref = t, ref
}

func (b *recordingBackend) lastTarget() registryapi.Repository {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.target
}

func (b *recordingBackend) OpenBlob(ctx context.Context, t registryapi.Repository, d digest.Digest) (registryapi.Blob, error) {
	b.record(t, d.String())
	b.opens.Add(1)
	if b.err != nil {
		return nil, b.err
	}
	if b.blob != nil {
		return b.blob, nil
	}
	return b.Backend.OpenBlob(ctx, t, d)
}

func (b *recordingBackend) StatBlob(ctx context.Context, t registryapi.Repository, d digest.Digest) (int64, error) {
	b.record(t, d.String())
	if b.err != nil {
		return 0, b.err
	}
	if b.blob != nil {
		return b.blob.Size(), nil
	}
	return b.Backend.StatBlob(ctx, t, d)
}

func (b *recordingBackend) GetManifest(ctx context.Context, t registryapi.Repository, ref string, accept []string) (*registryapi.Manifest, error) {
	b.record(t, ref)
	b.mu.Lock()
	b.accept = accept
	b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	return b.Backend.GetManifest(ctx, t, ref, accept)
}

func (b *recordingBackend) Tags(ctx context.Context, t registryapi.Repository, n int, last string) (*registryapi.Listing, error) {
	b.record(t, "")
	b.mu.Lock()
	b.n, b.last = n, last
	b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	if b.tags != nil {
		return b.tags, nil
	}
	return b.Backend.Tags(ctx, t, n, last)
}

func (b *recordingBackend) Referrers(ctx context.Context, t registryapi.Repository, d digest.Digest, artifactType string) (*registryapi.Listing, error) {
	b.record(t, d.String())
	b.mu.Lock()
	b.artifactType = artifactType
	b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	if b.referrers != nil {
		return b.referrers, nil
	}
	return b.Backend.Referrers(ctx, t, d, artifactType)
}

// newTestServer returns a Server over a recording registrytest.Backend.
func newTestServer(t testing.TB) (*registryapi.Server, *recordingBackend, *fixture) {
	t.Helper()
	f := newFixture()
	b := &recordingBackend{Backend: f.mem}
	return registryapi.New(b), b, f
}

// serve sends one request through the handler. target is the raw request URI, sent unchanged.
func serve(h http.Handler, method, target string, header http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for k, vs := range header {
		r.Header[k] = vs
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// ociErrors is the body of every error response.
type ociErrors struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Detail  any    `json:"detail"`
	} `json:"errors"`
}

// leaks are texts that must never appear in a response: paths, panics, Go's formatting of
// errors and the wrapped sentinels of errdefs.
var leaks = func() []string {
	l := []string{"/tmp", "goroutine", "panic", "runtime error", "%!", "<nil>", "LEAKED", "permission denied"}
	for _, e := range []error{errdefs.ErrNotFound, errdefs.ErrInvalid, errdefs.ErrDigestMismatch, errdefs.ErrTooLarge,
		errdefs.ErrUnavailable, errdefs.ErrDenied, errdefs.ErrTooManyRequests, errdefs.ErrNotConfigured, errdefs.ErrUnsupported} {
		l = append(l, ": "+e.Error())
	}
	return l
}()

func checkNoLeaks(t testing.TB, body string) {
	t.Helper()
	for _, s := range leaks {
		if strings.Contains(body, s) {
			t.Errorf("response body leaks %q: %s", s, body)
		}
	}
}

// checkError asserts that rec is an OCI error response with the given status and code. A HEAD
// response must carry the status and headers only.
func checkError(t testing.TB, rec *httptest.ResponseRecorder, method string, status int, code string) {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status = %d, want %d (body %q)", rec.Code, status, rec.Body.String())
	}
	h := rec.Header()
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if v := h.Get("Docker-Distribution-API-Version"); v != "registry/2.0" {
		t.Errorf("Docker-Distribution-API-Version = %q", v)
	}
	if v := h.Get("Docker-Content-Digest"); v != "" {
		t.Errorf("error response carries Docker-Content-Digest %q", v)
	}
	if v := h.Get("Content-Range"); v != "" && status != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("error response carries Content-Range %q", v)
	}
	body := rec.Body.String()
	checkNoLeaks(t, body)
	if method == http.MethodHead {
		if body != "" {
			t.Errorf("HEAD error response has a body: %q", body)
		}
		return
	}
	var e ociErrors
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %q", err, body)
	}
	if len(e.Errors) == 0 || e.Errors[0].Code == "" || e.Errors[0].Message == "" {
		t.Fatalf("error body has no error with a code and message: %q", body)
	}
	if code != "" && e.Errors[0].Code != code {
		t.Errorf("code = %q, want %q (body %q)", e.Errors[0].Code, code, body)
	}
}
