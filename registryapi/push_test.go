package registryapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/registryapi"
)

// fakePusher answers every push call with err (when set) and records what it was given; it
// holds nothing. The push side is tested for real, with a store, in seed/hosted.
type fakePusher struct {
	err error

	mu       sync.Mutex
	calls    []string
	manifest *registryapi.Manifest
	tags     []string
	written  []byte
}

func (p *fakePusher) record(call string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, call)
	return p.err
}

func (p *fakePusher) StartUpload(_ context.Context, repo string, _ digest.Algorithm) (string, error) {
	return "id-1", p.record("start " + repo)
}

func (p *fakePusher) WriteUpload(_ context.Context, repo, _ string, off int64, body io.Reader) (int64, error) {
	if err := p.record(fmt.Sprintf("write %s %d", repo, off)); err != nil {
		return 0, err
	}
	b, err := io.ReadAll(body)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.written = append(p.written, b...)
	return int64(len(p.written)), err
}

func (p *fakePusher) UploadSize(context.Context, string, string) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int64(len(p.written)), p.err
}

func (p *fakePusher) FinishUpload(_ context.Context, repo, _ string, d digest.Digest) (int64, error) {
	return 0, p.record("finish " + repo + " " + d.String())
}

func (p *fakePusher) CancelUpload(_ context.Context, repo, _ string) error {
	return p.record("cancel " + repo)
}

func (p *fakePusher) MountBlob(_ context.Context, repo, from string, _ digest.Digest) error {
	return p.record("mount " + repo + " " + from)
}

func (p *fakePusher) PutManifest(_ context.Context, repo string, tags []string, m *registryapi.Manifest) error {
	err := p.record("put " + repo)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.manifest, p.tags = m, tags
	return err
}

func (p *fakePusher) DeleteManifest(_ context.Context, repo string, _ digest.Digest) error {
	return p.record("delete manifest " + repo)
}

func (p *fakePusher) DeleteTag(_ context.Context, repo, tag string) error {
	return p.record("delete tag " + repo + " " + tag)
}

func (p *fakePusher) DeleteBlob(_ context.Context, repo string, _ digest.Digest) error {
	return p.record("delete blob " + repo)
}

func pushServer(t *testing.T, p registryapi.Pusher) (*registryapi.Server, *recordingBackend) {
	t.Helper()
	f := newFixture()
	b := &recordingBackend{Backend: f.mem}
	return registryapi.New(b, registryapi.WithPush(p)), b
}

func send(h http.Handler, method, target string, body []byte, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	for _, kv := range header {
		k, v, _ := strings.Cut(kv, ": ")
		r.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func TestPushManifestEdge(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("subject")
	withSubject := []byte(`{"schemaVersion":2,"mediaType":"` + testMediaType + `","subject":{"mediaType":"` + testMediaType + `","digest":"` + subject.String() + `","size":1}}`)
	noType := []byte(`{"schemaVersion":2}`)
	tests := []struct {
		name, target string
		body         []byte
		header       []string
		status       int
		code         string
		mediaType    string
		tags         []string
	}{
		{name: "by tag with subject", target: "/v2/a/b/manifests/v1", body: withSubject, header: []string{"Content-Type: " + testMediaType}, status: 201, mediaType: testMediaType, tags: []string{"v1"}},
		{name: "media type from the body", target: "/v2/a/b/manifests/v1", body: withSubject, status: 201, mediaType: testMediaType, tags: []string{"v1"}},
		{name: "Content-Type parameters dropped", target: "/v2/a/b/manifests/v1", body: noType, header: []string{"Content-Type: " + oci.MediaTypeDockerManifest + "; charset=utf-8"}, status: 201, mediaType: oci.MediaTypeDockerManifest, tags: []string{"v1"}},
		{name: "an unknown media type", target: "/v2/a/b/manifests/v1", body: noType, header: []string{"Content-Type: application/x-custom+json"}, status: 400, code: registryapi.CodeManifestInvalid},
		{name: "text/html as Content-Type", target: "/v2/a/b/manifests/v1", body: noType, header: []string{"Content-Type: text/html"}, status: 400, code: registryapi.CodeManifestInvalid},
		{name: "text/html in the body", target: "/v2/a/b/manifests/v1", body: []byte(`{"schemaVersion":2,"mediaType":"text/html"}`), status: 400, code: registryapi.CodeManifestInvalid},
		{name: "by digest with tag parameters", target: "/v2/a/b/manifests/" + digest.FromBytes(noType).String() + "?tag=x&tag=y", body: noType, header: []string{"Content-Type: " + testMediaType}, status: 201, mediaType: testMediaType, tags: []string{"x", "y"}},
		{name: "no media type anywhere", target: "/v2/a/b/manifests/v1", body: noType, status: 400, code: registryapi.CodeManifestInvalid},
		{name: "malformed Content-Type", target: "/v2/a/b/manifests/v1", body: noType, header: []string{"Content-Type: ;;"}, status: 400, code: registryapi.CodeManifestInvalid},
		{name: "bad tag parameter", target: "/v2/a/b/manifests/v1?tag=-x", body: noType, header: []string{"Content-Type: " + testMediaType}, status: 400, code: registryapi.CodeManifestInvalid},
		{name: "digest mismatch", target: "/v2/a/b/manifests/" + digest.FromString("other").String(), body: noType, header: []string{"Content-Type: " + testMediaType}, status: 400, code: registryapi.CodeDigestInvalid},
		{name: "sha512 digest", target: "/v2/a/b/manifests/" + digest.SHA512.FromBytes(noType).String(), body: noType, header: []string{"Content-Type: " + testMediaType}, status: 201, mediaType: testMediaType},
		{name: "bad name", target: "/v2/A/b/manifests/v1", body: noType, status: 400, code: registryapi.CodeNameInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := &fakePusher{}
			s, _ := pushServer(t, p)
			rec := send(s, http.MethodPut, tc.target, tc.body, tc.header...)
			if tc.code != "" {
				checkError(t, rec, http.MethodPut, tc.status, tc.code)
				if len(p.calls) != 0 {
					t.Errorf("refused at the edge, yet the pusher got %v", p.calls)
				}
				return
			}
			if rec.Code != tc.status {
				t.Fatalf("status %d, body %s", rec.Code, rec.Body)
			}
			if p.manifest.MediaType != tc.mediaType || !bytes.Equal(p.manifest.Body, tc.body) || fmt.Sprint(p.tags) != fmt.Sprint(tc.tags) {
				t.Errorf("pusher got %s %v %s", p.manifest.MediaType, p.tags, p.manifest.Body)
			}
			if rec.Header().Get("Docker-Content-Digest") != p.manifest.Digest.String() {
				t.Errorf("Docker-Content-Digest %q, manifest %s", rec.Header().Get("Docker-Content-Digest"), p.manifest.Digest)
			}
			if bytes.Equal(tc.body, withSubject) != (rec.Header().Get("OCI-Subject") == subject.String()) {
				t.Errorf("OCI-Subject = %q", rec.Header().Get("OCI-Subject"))
			}
		})
	}
}

func TestPushManifestTooLarge(t *testing.T) {
	t.Parallel()
	p := &fakePusher{}
	s, _ := pushServer(t, p)
	big := bytes.Repeat([]byte(" "), oci.MaxManifestSize+1)
	checkError(t, send(s, http.MethodPut, "/v2/a/b/manifests/v1", big, "Content-Type: "+testMediaType), http.MethodPut, http.StatusRequestEntityTooLarge, registryapi.CodeSizeInvalid)
	// Without a Content-Length (chunked), the read is bounded all the same.
	r := httptest.NewRequest(http.MethodPut, "/v2/a/b/manifests/v1", io.MultiReader(bytes.NewReader(big), strings.NewReader("{}")))
	r.ContentLength = -1
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, r)
	checkError(t, rec, http.MethodPut, http.StatusRequestEntityTooLarge, registryapi.CodeSizeInvalid)
	if len(p.calls) != 0 {
		t.Errorf("pusher got %v", p.calls)
	}
}

// TestPushErrors maps each error class a Pusher returns to its OCI error, and never shows the
// error's text.
func TestPushErrors(t *testing.T) {
	t.Parallel()
	leak := errors.New(leakMarker)
	tests := []struct {
		name, method, target string
		err                  error
		status               int
		code                 string
	}{
		{"unknown upload", http.MethodPatch, "/v2/a/b/blobs/uploads/id-1", fmt.Errorf("%w %w", leak, registryapi.ErrUploadUnknown), 404, registryapi.CodeBlobUploadUnknown},
		{"upload status", http.MethodGet, "/v2/a/b/blobs/uploads/id-1", fmt.Errorf("%w %w", leak, registryapi.ErrUploadUnknown), 404, registryapi.CodeBlobUploadUnknown},
		{"out of order", http.MethodPatch, "/v2/a/b/blobs/uploads/id-1", &registryapi.UploadRangeError{Offset: 5, Size: 0}, 416, registryapi.CodeRangeInvalid},
		{"digest mismatch", http.MethodPut, "/v2/a/b/blobs/uploads/id-1?digest=" + digest.FromString("x").String(), fmt.Errorf("%w %w", leak, errdefs.ErrDigestMismatch), 400, registryapi.CodeDigestInvalid},
		{"too large", http.MethodPost, "/v2/a/b/blobs/uploads/?digest=" + digest.FromString("x").String(), fmt.Errorf("%w %w", leak, errdefs.ErrTooLarge), 413, registryapi.CodeSizeInvalid},
		{"too many uploads", http.MethodPost, "/v2/a/b/blobs/uploads/", fmt.Errorf("%w %w", leak, errdefs.ErrTooManyRequests), 429, registryapi.CodeTooManyRequests},
		{"blob unknown to manifest", http.MethodPut, "/v2/a/b/manifests/v1", fmt.Errorf("%w %w", leak, registryapi.ErrManifestBlobUnknown), 400, registryapi.CodeManifestBlobUnkwn},
		{"manifest invalid", http.MethodPut, "/v2/a/b/manifests/v1", fmt.Errorf("%w %w", leak, registryapi.ErrManifestInvalid), 400, registryapi.CodeManifestInvalid},
		{"deletes disabled", http.MethodDelete, "/v2/a/b/manifests/v1", fmt.Errorf("%w %w", leak, errdefs.ErrUnsupported), 405, registryapi.CodeUnsupported},
		{"manifest unknown", http.MethodDelete, "/v2/a/b/manifests/" + digest.FromString("x").String(), fmt.Errorf("%w %w", leak, errdefs.ErrNotFound), 404, registryapi.CodeManifestUnknown},
		{"blob unknown", http.MethodDelete, "/v2/a/b/blobs/" + digest.FromString("x").String(), fmt.Errorf("%w %w", leak, errdefs.ErrNotFound), 404, registryapi.CodeBlobUnknown},
		{"anything else", http.MethodDelete, "/v2/a/b/blobs/" + digest.FromString("x").String(), leak, 500, registryapi.CodeUnknown},
		{"method", http.MethodPost, "/v2/a/b/manifests/v1", nil, 405, registryapi.CodeUnsupported},
		{"GET on the upload root", http.MethodGet, "/v2/a/b/blobs/uploads/", nil, 405, registryapi.CodeUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _ := pushServer(t, &fakePusher{err: tc.err})
			rec := send(s, tc.method, tc.target, []byte(`{"mediaType":"`+testMediaType+`"}`))
			checkError(t, rec, tc.method, tc.status, tc.code)
		})
	}
}

// TestPushIgnoresNamespace: pushes are addressed by repository alone; reads carry the ns to the
// Backend, which decides.
func TestPushIgnoresNamespace(t *testing.T) {
	t.Parallel()
	p := &fakePusher{}
	s, b := pushServer(t, p)
	if rec := send(s, http.MethodPost, "/v2/a/b/blobs/uploads/?ns=unknown.example", nil); rec.Code != http.StatusAccepted {
		t.Fatalf("POST with an unknown ns: %d %s", rec.Code, rec.Body)
	}
	send(s, http.MethodGet, "/v2/a/b/manifests/v1?ns=unknown.example", nil)
	if b.calls.Load() != 1 || b.lastTarget().Registry != "unknown.example" {
		t.Errorf("backend calls %d, target %+v", b.calls.Load(), b.lastTarget())
	}
}
