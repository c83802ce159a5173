package hosted

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

const repo = "team/app"

func TestMonolithicUpload(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	blob := []byte("a whole blob in one request")
	d := s.pushBlob(t, repo, blob)

	r := s.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), nil)
	expect(t, "GET blob", r, http.StatusOK, "")
	if !bytes.Equal(r.body, blob) || r.header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("GET blob: %q, digest %q", r.body, r.header.Get("Docker-Content-Digest"))
	}
	if got := s.do(t, http.MethodHead, "/v2/"+repo+"/blobs/"+d.String(), nil).header.Get("Content-Length"); got != fmt.Sprint(len(blob)) {
		t.Errorf("HEAD blob Content-Length %s, want %d", got, len(blob))
	}
	if files := s.tmpFiles(t); len(files) != 0 {
		t.Errorf("tmp/ holds %v after the push", files)
	}
}

func TestChunkedUpload(t *testing.T) {
	t.Parallel()
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		t.Run(alg.String(), func(t *testing.T) {
			t.Parallel()
			s := newSeed(t)
			blob := []byte("0123456789abcdefghijKLMNOPQRSTUVWXYZ")
			d := alg.FromBytes(blob)
			loc := s.startUpload(t, repo)

			r := s.do(t, http.MethodPatch, loc, blob[:10], "Content-Range: 0-9", "Content-Type: application/octet-stream")
			expect(t, "first chunk", r, http.StatusAccepted, "")
			if r.header.Get("Range") != "0-9" {
				t.Errorf("after the first chunk Range = %q, want 0-9", r.header.Get("Range"))
			}
			// A chunk without Content-Range is appended (a streamed upload).
			expect(t, "streamed chunk", s.do(t, http.MethodPatch, r.header.Get("Location"), blob[10:20]), http.StatusAccepted, "")
			st := s.do(t, http.MethodGet, loc, nil)
			expect(t, "status", st, http.StatusNoContent, "")
			if st.header.Get("Range") != "0-19" || st.header.Get("Location") == "" {
				t.Errorf("status: Range %q Location %q", st.header.Get("Range"), st.header.Get("Location"))
			}
			// The last chunk comes with the PUT.
			r = s.do(t, http.MethodPut, loc+"?digest="+d.String(), blob[20:], fmt.Sprintf("Content-Range: 20-%d", len(blob)-1))
			expect(t, "closing PUT", r, http.StatusCreated, "")
			if r.header.Get("Location") != "/v2/"+repo+"/blobs/"+d.String() || r.header.Get("Docker-Content-Digest") != d.String() {
				t.Errorf("closing PUT: Location %q digest %q", r.header.Get("Location"), r.header.Get("Docker-Content-Digest"))
			}
			got := s.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), nil)
			if !bytes.Equal(got.body, blob) {
				t.Fatalf("GET blob = %q, want %q", got.body, blob)
			}
			expect(t, "status after the end", s.do(t, http.MethodGet, loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
			if files := s.tmpFiles(t); len(files) != 0 {
				t.Errorf("tmp/ holds %v after the push", files)
			}
		})
	}
}

func TestMount(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	d := s.pushBlob(t, "team/a", []byte("shared layer"))

	r := s.do(t, http.MethodPost, "/v2/team/b/blobs/uploads/?mount="+d.String()+"&from=team/a", nil)
	expect(t, "mount", r, http.StatusCreated, "")
	if r.header.Get("Location") != "/v2/team/b/blobs/"+d.String() {
		t.Errorf("mount Location %q", r.header.Get("Location"))
	}
	expect(t, "mounted blob", s.do(t, http.MethodGet, "/v2/team/b/blobs/"+d.String(), nil), http.StatusOK, "")

	// From a repository that does not hold it: an upload session instead.
	r = s.do(t, http.MethodPost, "/v2/team/c/blobs/uploads/?mount="+d.String()+"&from=team/none", nil)
	expect(t, "mount from elsewhere", r, http.StatusAccepted, "")
	if !strings.HasPrefix(r.header.Get("Location"), "/v2/team/c/blobs/uploads/") {
		t.Errorf("mount fallback Location %q", r.header.Get("Location"))
	}
	expect(t, "not mounted", s.do(t, http.MethodHead, "/v2/team/c/blobs/"+d.String(), nil), http.StatusNotFound, "")
	expect(t, "cancel", s.do(t, http.MethodDelete, r.header.Get("Location"), nil), http.StatusNoContent, "")

	// Without from: any hosted repository holding it will do.
	expect(t, "anonymous mount", s.do(t, http.MethodPost, "/v2/team/d/blobs/uploads/?mount="+d.String(), nil), http.StatusCreated, "")
	expect(t, "bad mount digest", s.do(t, http.MethodPost, "/v2/team/d/blobs/uploads/?mount=sha256:nope&from=team/a", nil), http.StatusBadRequest, "DIGEST_INVALID")
	expect(t, "bad from", s.do(t, http.MethodPost, "/v2/team/d/blobs/uploads/?mount="+d.String()+"&from=Team/A", nil), http.StatusBadRequest, "NAME_INVALID")
}

// TestBadUploads feeds uploads what a broken or hostile client sends: each must get its OCI error
// and leave nothing on disk.
func TestBadUploads(t *testing.T) {
	t.Parallel()
	blob := []byte("the blob that was meant to be pushed")
	d := digest.FromBytes(blob)
	tests := []struct {
		name string
		// run does the requests on a fresh upload at loc and checks the last answer.
		run func(t *testing.T, s *seed, loc string)
		// gone: the session must have ended.
		gone bool
	}{
		{name: "wrong digest on PUT", gone: true, run: func(t *testing.T, s *seed, loc string) {
			other := digest.FromString("something else")
			expect(t, "PUT", s.do(t, http.MethodPut, loc+"?digest="+other.String(), blob), http.StatusBadRequest, "DIGEST_INVALID")
		}},
		{name: "truncated upload", gone: true, run: func(t *testing.T, s *seed, loc string) {
			expect(t, "PATCH", s.do(t, http.MethodPatch, loc, blob[:10], "Content-Range: 0-9"), http.StatusAccepted, "")
			expect(t, "PUT", s.do(t, http.MethodPut, loc+"?digest="+d.String(), nil), http.StatusBadRequest, "DIGEST_INVALID")
		}},
		{name: "out of order chunk", run: func(t *testing.T, s *seed, loc string) {
			expect(t, "PATCH", s.do(t, http.MethodPatch, loc, blob[:10], "Content-Range: 0-9"), http.StatusAccepted, "")
			r := s.do(t, http.MethodPatch, loc, blob[20:30], "Content-Range: 20-29")
			expect(t, "gap", r, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
			if r.header.Get("Range") != "0-9" {
				t.Errorf("416 Range = %q, want 0-9", r.header.Get("Range"))
			}
			expect(t, "overlap", s.do(t, http.MethodPatch, loc, blob[5:15], "Content-Range: 5-14"), http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
			expect(t, "status", s.do(t, http.MethodGet, loc, nil), http.StatusNoContent, "")
		}},
		{name: "malformed Content-Range", run: func(t *testing.T, s *seed, loc string) {
			for _, cr := range []string{"abc", "9-2", "-5", "0-", "bytes=1-x", "0-99999999999999999999", "0--1"} {
				expect(t, cr, s.do(t, http.MethodPatch, loc, blob[:3], "Content-Range: "+cr), http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
			}
		}},
		{name: "Content-Length disagrees with Content-Range", run: func(t *testing.T, s *seed, loc string) {
			expect(t, "PATCH", s.do(t, http.MethodPatch, loc, blob[:10], "Content-Range: 0-4"), http.StatusBadRequest, "SIZE_INVALID")
		}},
		{name: "malformed digest on PUT", run: func(t *testing.T, s *seed, loc string) {
			for _, q := range []string{"", "?digest=", "?digest=sha256:abc", "?digest=md5:d41d8cd98f00b204e9800998ecf8427e", "?digest=sha256:" + strings.Repeat("G", 64)} {
				expect(t, q, s.do(t, http.MethodPut, loc+q, nil), http.StatusBadRequest, "DIGEST_INVALID")
			}
		}},
		{name: "cancelled", gone: true, run: func(t *testing.T, s *seed, loc string) {
			expect(t, "PATCH", s.do(t, http.MethodPatch, loc, blob[:10]), http.StatusAccepted, "")
			expect(t, "DELETE", s.do(t, http.MethodDelete, loc, nil), http.StatusNoContent, "")
			expect(t, "DELETE again", s.do(t, http.MethodDelete, loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
		}},
		{name: "session of another repository", run: func(t *testing.T, s *seed, loc string) {
			other := strings.Replace(loc, "/v2/"+repo+"/", "/v2/team/other/", 1)
			expect(t, "PATCH", s.do(t, http.MethodPatch, other, blob), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
		}},
		{name: "unknown or malformed upload ids", run: func(t *testing.T, s *seed, _ string) {
			for _, id := range []string{"nope", "..", "a%2fb", strings.Repeat("x", 200), "a.b"} {
				expect(t, id, s.do(t, http.MethodPatch, "/v2/"+repo+"/blobs/uploads/"+id, blob), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSeed(t)
			loc := s.startUpload(t, repo)
			tc.run(t, s, loc)
			if tc.gone {
				expect(t, "session after", s.do(t, http.MethodGet, loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
				if files := s.tmpFiles(t); len(files) != 0 {
					t.Errorf("tmp/ still holds %v", files)
				}
			}
			expect(t, "blob never committed", s.do(t, http.MethodHead, "/v2/"+repo+"/blobs/"+d.String(), nil), http.StatusNotFound, "")
			if _, err := s.st.Stat(d); err == nil {
				t.Error("the store holds the blob")
			}
		})
	}
}

func TestOversizedUploads(t *testing.T) {
	t.Parallel()
	s := newSeed(t, WithMaxBlobSize(16))
	big := bytes.Repeat([]byte("x"), 17)
	expect(t, "monolithic", s.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(big).String(), big), http.StatusRequestEntityTooLarge, "SIZE_INVALID")

	loc := s.startUpload(t, repo)
	expect(t, "first chunk", s.do(t, http.MethodPatch, loc, big[:10], "Content-Range: 0-9"), http.StatusAccepted, "")
	expect(t, "second chunk", s.do(t, http.MethodPatch, loc, big[10:], "Content-Range: 10-16"), http.StatusRequestEntityTooLarge, "SIZE_INVALID")
	expect(t, "session after", s.do(t, http.MethodGet, loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	if files := s.tmpFiles(t); len(files) != 0 {
		t.Errorf("tmp/ still holds %v", files)
	}
	// At the limit is fine.
	s.pushBlob(t, repo, big[:16])
}

func TestTooManyUploads(t *testing.T) {
	t.Parallel()
	s := newSeed(t, WithMaxUploads(2))
	s.startUpload(t, repo)
	loc := s.startUpload(t, repo)
	expect(t, "third", s.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil), http.StatusTooManyRequests, "TOOMANYREQUESTS")
	expect(t, "cancel", s.do(t, http.MethodDelete, loc, nil), http.StatusNoContent, "")
	s.startUpload(t, repo)
}

// TestAbandonedUploads: sessions left half-way are removed after the timeout, bytes and all.
func TestAbandonedUploads(t *testing.T) {
	t.Parallel()
	s := newSeed(t, WithUploadTimeout(time.Minute))
	idle := s.startUpload(t, repo)
	expect(t, "PATCH", s.do(t, http.MethodPatch, idle, []byte("half of a blob")), http.StatusAccepted, "")
	if files := s.tmpFiles(t); len(files) != 1 {
		t.Fatalf("tmp/ holds %v, want the session's file", files)
	}
	s.reg.expire(time.Now()) // not idle for long enough yet
	expect(t, "kept", s.do(t, http.MethodGet, idle, nil), http.StatusNoContent, "")

	s.reg.expire(time.Now().Add(2 * time.Minute))
	expect(t, "expired", s.do(t, http.MethodGet, idle, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	expect(t, "PATCH after expiry", s.do(t, http.MethodPatch, idle, []byte("rest")), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	if files := s.tmpFiles(t); len(files) != 0 {
		t.Errorf("tmp/ still holds %v", files)
	}
}

// TestRunExpires runs the expiry loop for real with a short timeout: long enough that the
// session outlives its PATCH on a loaded machine (20 ms did not), short enough to be seen expiring.
func TestRunExpires(t *testing.T) {
	t.Parallel()
	s := newSeed(t, WithUploadTimeout(2*time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.reg.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	loc := s.startUpload(t, repo)
	expect(t, "PATCH", s.do(t, http.MethodPatch, loc, []byte("abandoned")), http.StatusAccepted, "")
	deadline := time.Now().Add(20 * time.Second)
	for len(s.tmpFiles(t)) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the abandoned upload was never removed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	expect(t, "expired", s.do(t, http.MethodGet, loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
}

// TestConcurrentSameBlob: clients pushing the same blob at once all succeed and it is stored once.
func TestConcurrentSameBlob(t *testing.T) {
	t.Parallel()
	var commits sync.Map
	s := newSeed(t, WithCommitHook(func(d digest.Digest) { commits.Store(d, true) }))
	blob := make([]byte, 3<<20)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(blob)
	const clients = 6
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			repo := fmt.Sprintf("team/app%d", i%2)
			r, err := s.try(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
			if err != nil || r.status != http.StatusAccepted {
				errs <- fmt.Errorf("client %d POST: %v %d %s", i, err, r.status, r.body)
				return
			}
			loc := r.header.Get("Location")
			half := len(blob) / 2
			if r, err := s.try(http.MethodPatch, loc, blob[:half], fmt.Sprintf("Content-Range: 0-%d", half-1)); err != nil || r.status != http.StatusAccepted {
				errs <- fmt.Errorf("client %d PATCH: %v %d %s", i, err, r.status, r.body)
				return
			}
			if r, err := s.try(http.MethodPut, loc+"?digest="+d.String(), blob[half:]); err != nil || r.status != http.StatusCreated {
				errs <- fmt.Errorf("client %d PUT: %v %d %s", i, err, r.status, r.body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, n := s.st.Usage(); n != 1 {
		t.Errorf("the store holds %d objects, want 1", n)
	}
	files, _ := filepath.Glob(filepath.Join(s.dir, "blobs", "sha256", "*"))
	if len(files) != 1 {
		t.Errorf("blobs/sha256 holds %v", files)
	}
	if b, err := os.ReadFile(files[0]); err != nil || !bytes.Equal(b, blob) {
		t.Errorf("stored blob differs (%v)", err)
	}
	if _, ok := commits.Load(d); !ok {
		t.Error("the commit hook was not told about the blob")
	}
	for _, r := range []string{"team/app0", "team/app1"} {
		expect(t, r, s.do(t, http.MethodHead, "/v2/"+r+"/blobs/"+d.String(), nil), http.StatusOK, "")
	}
}

func TestMalformedNames(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	for _, p := range []string{"/v2/Team/App/blobs/uploads/", "/v2/team//app/blobs/uploads/", "/v2/team/app-/blobs/uploads/", "/v2/a%2f..%2fb/blobs/uploads/"} {
		r := s.do(t, http.MethodPost, p, nil)
		if r.status != http.StatusBadRequest && r.status != http.StatusNotFound {
			t.Errorf("POST %s: %d %s", p, r.status, r.body)
		}
		if r.code() != "NAME_INVALID" && r.code() != "NAME_UNKNOWN" {
			t.Errorf("POST %s: code %q", p, r.code())
		}
	}
}

// TestWaitingRequestGivesUp: a request queued behind another on the same session stops waiting
// when its client goes away, and the session is not expired while a request holds it.
func TestWaitingRequestGivesUp(t *testing.T) {
	t.Parallel()
	s := newSeed(t, WithUploadTimeout(time.Minute))
	ctx := context.Background()
	id, err := s.reg.StartUpload(ctx, repo, "")
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.reg.acquire(ctx, repo, id) // a slow request holds the session
	if err != nil {
		t.Fatal(err)
	}
	s.reg.expire(time.Now().Add(time.Hour))
	if _, err := s.reg.UploadSize(ctx, repo, id); err != nil {
		t.Fatalf("a busy session was expired: %v", err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.reg.WriteUpload(gone, repo, id, 0, strings.NewReader("x")); err == nil {
		t.Fatal("a queued write went through while another request held the session")
	}
	s.reg.release(u)
	if n, err := s.reg.WriteUpload(ctx, repo, id, 0, strings.NewReader("x")); err != nil || n != 1 {
		t.Fatalf("write after release = %d, %v", n, err)
	}
}
