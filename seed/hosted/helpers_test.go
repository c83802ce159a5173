package hosted

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/registryapi"
)

// seed is a Registry on a real store behind the registryapi server, on 127.0.0.1.
type seed struct {
	reg  *Registry
	st   *store.Store
	dir  string
	url  string // http://127.0.0.1:PORT
	host string // 127.0.0.1:PORT
}

func newSeed(t testing.TB, opts ...Option) *seed {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg, err := New(st, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	srv := httptest.NewServer(registryapi.New(reg, registryapi.WithPush(reg)))
	t.Cleanup(srv.Close)
	return &seed{reg: reg, st: st, dir: dir, url: srv.URL, host: strings.TrimPrefix(srv.URL, "http://")}
}

// response is what a test reads of an answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// code returns the first OCI error code of the body, or "".
func (r response) code() string {
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if json.Unmarshal(r.body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// do sends one request; header is "Key: value" pairs.
func (s *seed) do(t *testing.T, method, path string, body []byte, header ...string) response {
	t.Helper()
	r, err := s.try(method, path, body, header...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// try is do for goroutines other than the test's.
func (s *seed) try(method, path string, body []byte, header ...string) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		return response{}, err
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func expect(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.code() != code {
		t.Fatalf("%s: got %d %q (%s), want %d %q", what, r.status, r.code(), r.body, status, code)
	}
}

// pushBlob pushes b monolithically to repo and returns its sha256 digest.
func (s *seed) pushBlob(t *testing.T, repo string, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	expect(t, "monolithic push", s.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), b), http.StatusCreated, "")
	return d
}

// startUpload opens a session and returns its location.
func (s *seed) startUpload(t *testing.T, repo string) string {
	t.Helper()
	r := s.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	expect(t, "upload start", r, http.StatusAccepted, "")
	loc := r.header.Get("Location")
	if !strings.HasPrefix(loc, "/v2/"+repo+"/blobs/uploads/") || r.header.Get("Docker-Upload-UUID") == "" {
		t.Fatalf("upload start: Location %q, Docker-Upload-UUID %q", loc, r.header.Get("Docker-Upload-UUID"))
	}
	return loc
}

// pushManifest pushes body by ref and returns the answer.
func (s *seed) pushManifest(t *testing.T, repo, ref, mediaType string, body []byte) response {
	t.Helper()
	return s.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, body, "Content-Type: "+mediaType)
}

// tmpFiles lists what the store's tmp/ holds: upload bytes live there until committed.
func (s *seed) tmpFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

const (
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtIndex    = "application/vnd.oci.image.index.v1+json"
	mtConfig   = "application/vnd.oci.image.config.v1+json"
	mtLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	mtEmpty    = "application/vnd.oci.empty.v1+json"
)

type desc struct {
	MediaType    string        `json:"mediaType"`
	Digest       digest.Digest `json:"digest"`
	Size         int64         `json:"size"`
	ArtifactType string        `json:"artifactType,omitempty"`
}

// manifestJSON builds an image manifest of config and layers, with an optional subject and
// artifactType.
func manifestJSON(t *testing.T, config desc, layers []desc, subject *desc, artifactType string) []byte {
	t.Helper()
	m := map[string]any{"schemaVersion": 2, "mediaType": mtManifest, "config": config, "layers": layers}
	if subject != nil {
		m["subject"] = subject
	}
	if artifactType != "" {
		m["artifactType"] = artifactType
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// image pushes a config and one layer to repo and returns the manifest that names them.
func (s *seed) image(t *testing.T, repo, layer string) []byte {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	cd := s.pushBlob(t, repo, cfg)
	ld := s.pushBlob(t, repo, []byte(layer))
	return manifestJSON(t, desc{MediaType: mtConfig, Digest: cd, Size: int64(len(cfg))},
		[]desc{{MediaType: mtLayer, Digest: ld, Size: int64(len(layer))}}, nil, "")
}
