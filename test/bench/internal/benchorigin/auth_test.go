package benchorigin

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-oci/shoal/test/bench/internal/benchruntime"
)

// do sends one request with an optional Authorization header and returns its status and its
// WWW-Authenticate header.
func do(t *testing.T, method, url, auth string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// With RequireAuth the origin challenges anonymous and wrong credentials (the tag-list probe
// included), serves a known one, and counts every request by kind; a real client (ggcr remote)
// pulls with the credential and is refused without it.
func TestRequireAuthAndRequestKinds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	im, err := benchruntime.MakeImage(dir, 10<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := im.Layers[0].Digest
	o, err := Start(dir, Pacing{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	if err := im.Push(ctx, o.URL()); err != nil {
		t.Fatal(err)
	}
	repo := "/v2/" + benchruntime.Repository
	ref, err := name.ParseReference(o.Host()+"/"+benchruntime.Repository+":"+benchruntime.Tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	base := o.Counts()

	o.RequireAuth(map[string]string{"alice": "secret"})
	good, bad := BasicAuth("alice", "secret"), BasicAuth("alice", "wrong")
	for _, c := range []struct{ method, path, auth string }{
		{http.MethodHead, repo + "/tags/list", ""},
		{http.MethodGet, repo + "/manifests/" + benchruntime.Tag, ""},
		{http.MethodGet, repo + "/blobs/" + d, bad},
		{http.MethodHead, repo + "/manifests/" + benchruntime.Tag, BasicAuth("bob", "secret")},
	} {
		code, challenge := do(t, c.method, o.URL()+c.path, c.auth)
		if code != http.StatusUnauthorized || challenge != `Basic realm="benchorigin"` {
			t.Fatalf("%s %s (auth %q): %d, challenge %q", c.method, c.path, c.auth, code, challenge)
		}
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, repo + "/tags/list"},
		{http.MethodHead, repo + "/manifests/" + benchruntime.Tag},
		{http.MethodHead, repo + "/manifests/" + benchruntime.Tag},
		{http.MethodHead, repo + "/blobs/" + d},
	} {
		if code, _ := do(t, c.method, o.URL()+c.path, good); code != http.StatusOK {
			t.Fatalf("%s %s with the credential: %d", c.method, c.path, code)
		}
	}
	if code, n := getAuth(t, o.URL()+repo+"/blobs/"+d, good); code != http.StatusOK || n != 10<<10 {
		t.Fatalf("blob GET with the credential: %d, %d bytes", code, n)
	}
	if _, err := remote.Image(ref, remote.WithContext(ctx)); err == nil {
		t.Fatal("an anonymous ggcr pull succeeded")
	}
	pulled, err := remote.Image(ref, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: "alice", Password: "secret"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pulled.RawManifest(); err != nil {
		t.Fatal(err)
	}
	q := o.Counts().Since(base).Requests
	// Four refused above; ggcr's anonymous pull: its /v2/ ping and its manifest GET refused; its
	// pull with the credential: the anonymous ping refused, then the manifest GET answered.
	// The tag list GET is the one Other.
	want := Requests{BlobGets: 1, BlobHeads: 1, ManifestGets: 1, ManifestHeads: 2, Other: 1, Unauthorized: 7}
	if q != want || q.Total() != 13 {
		t.Fatalf("requests %+v, want %+v", q, want)
	}

	o.RequireAuth(nil)
	if code, _ := do(t, http.MethodHead, o.URL()+repo+"/manifests/"+benchruntime.Tag, ""); code != http.StatusOK {
		t.Fatalf("anonymous HEAD after RequireAuth(nil): %d", code)
	}
}

func getAuth(t *testing.T, url, auth string) (int, int64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, n
}
