package main

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-oci/shoal/test/testutil"
)

// startRegistry runs go-containerregistry's registry on 127.0.0.1 standing in for a seed; it
// wants the bearer token tok when tok is set.
func startRegistry(t *testing.T, tok string) string {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok != "" && r.Header.Get("Authorization") != "Bearer "+tok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// remoteDigest is the digest of ref's manifest, or of its config when config is set (a
// docker-archive keeps an image's config and layers but not its manifest).
func remoteDigest(t *testing.T, ref string, config bool) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(r, remote.WithAuth(authn.FromConfig(authn.AuthConfig{RegistryToken: "s3cret"})))
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	if !config {
		return desc.Digest
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Import a layout into one seed, export it in every format, and import each export into a fresh
// seed: the same digests come out, through the CLI's flags and SHOAL_* variables.
func TestImportExportCLI(t *testing.T) {
	idx := testutil.NewIndex(t, 2, 512, testutil.Linux("amd64"), testutil.Linux("arm64"))
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "1.0"})); err != nil {
		t.Fatal(err)
	}
	want, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SHOAL_ADMIN_TOKEN_FILE", tokenFile)
	seed := startRegistry(t, "s3cret")

	// Named by a tag alone: --repo is required.
	if out, err := run(t, "import", dir, "--seed", seed); err == nil || !strings.Contains(err.Error(), "--repo") {
		t.Fatalf("import without --repo: %v\n%s", err, out)
	}
	out, err := run(t, "import", dir, "--seed", seed, "--repo", "team/app")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("import printed:\n%s", out)
	if !strings.Contains(out, "team/app:1.0: pushed 6/6 blobs") || !strings.Contains(out, "imported team/app:1.0@"+want.String()+"\n") {
		t.Fatalf("import printed:\n%s", out)
	}

	arm := remoteDigest(t, seed+"/team/app@"+childDigest(t, idx, 1).String(), true)
	for _, tc := range []struct {
		format string
		args   []string
		want   v1.Hash
	}{
		{"oci", nil, want},
		{"oci-archive", nil, want},
		{"docker-archive", []string{"--platform", "linux/arm64"}, arm},
	} {
		dst := filepath.Join(t.TempDir(), "out")
		args := append([]string{"export", "team/app:1.0", dst, "--seed", seed, "--format", tc.format}, tc.args...)
		if out, err := run(t, args...); err != nil || !strings.Contains(out, "exported team/app:1.0 to "+dst) {
			t.Fatalf("%s: %v\n%s", tc.format, err, out)
		}
		if out, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("%s: export over an existing path: %v\n%s", tc.format, err, out)
		}
		if out, err := run(t, append(args, "--force")...); err != nil {
			t.Fatalf("%s --force: %v\n%s", tc.format, err, out)
		}
		other := startRegistry(t, "s3cret")
		t.Setenv("SHOAL_SEED", other)
		if out, err := run(t, "import", dst); err != nil {
			t.Fatalf("%s: re-import: %v\n%s", tc.format, err, out)
		}
		if got := remoteDigest(t, other+"/team/app:1.0", tc.format == "docker-archive"); got != tc.want {
			t.Fatalf("%s: re-imported %s, want %s", tc.format, got, tc.want)
		}
	}

	for _, bad := range [][]string{
		{"export", "team/app:1.0"},
		{"export", "team/app:1.0", filepath.Join(t.TempDir(), "x"), "--seed", seed, "--format", "zip"},
		{"export", "team/app:1.0", filepath.Join(t.TempDir(), "x"), "--seed", seed, "--format", "docker-archive"},
		{"export", "team/app:1.0", filepath.Join(t.TempDir(), "x"), "--seed", seed, "--platform", "not/a/plat/form"},
		{"import"},
		{"import", filepath.Join(t.TempDir(), "missing"), "--seed", seed},
		{"import", dir, "--seed", "http://" + seed},
	} {
		out, err := run(t, bad...)
		if err == nil {
			t.Errorf("%v accepted:\n%s", bad, out)
		}
		t.Logf("%v: %v", bad[:min(len(bad), 3)], err)
	}
}

func childDigest(t *testing.T, idx v1.ImageIndex, i int) v1.Hash {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return im.Manifests[i].Digest
}
