package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/seed/archive"
	"github.com/shoal-oci/shoal/test/testutil"
)

const refName = "org.opencontainers.image.ref.name"

// newRegistry starts go-containerregistry's in-memory registry on 127.0.0.1 and returns its
// host:port; handler, when given, wraps it.
func newRegistry(t *testing.T, wrap ...func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	for _, w := range wrap {
		h = w(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// fixture is an OCI layout holding a two-platform index named app:multi and an image named
// ghcr.io/org/tool:1.
type fixture struct {
	dir string
	idx v1.ImageIndex
	img v1.Image
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	f := fixture{
		dir: filepath.Join(t.TempDir(), "layout"),
		idx: testutil.NewIndex(t, 2, 1024, testutil.Linux("amd64"), testutil.Linux("arm64")),
		img: testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 2, 2048),
	}
	p, err := layout.Write(f.dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(f.idx, layout.WithAnnotations(map[string]string{refName: "app:multi"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(f.img, layout.WithAnnotations(map[string]string{refName: "ghcr.io/org/tool:1"})); err != nil {
		t.Fatal(err)
	}
	return f
}

func digest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// requireSame fails unless the image or index at host/r has digest want and, below it, the same
// manifests and layers as local.
func requireSame(t *testing.T, host, r string, local remote.Taggable) {
	t.Helper()
	desc, err := remote.Get(ref(t, host+"/"+r))
	if err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	if want := digest(t, local.(interface{ Digest() (v1.Hash, error) })); desc.Digest != want {
		t.Fatalf("%s: pushed %s, layout has %s", r, desc.Digest, want)
	}
	if got, want := blobDigests(t, desc), blobDigestsOf(t, local); !slices.Equal(got, want) {
		t.Fatalf("%s: blobs\n%v\nwant\n%v", r, got, want)
	}
}

func blobDigests(t *testing.T, desc *remote.Descriptor) []string {
	t.Helper()
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		return blobDigestsOf(t, idx)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	return blobDigestsOf(t, img)
}

// blobDigestsOf lists manifest, config and layer digests under t, depth first.
func blobDigestsOf(t *testing.T, x remote.Taggable) []string {
	t.Helper()
	var out []string
	switch x := x.(type) {
	case v1.ImageIndex:
		im, err := x.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range im.Manifests {
			img, err := x.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, d.Digest.String())
			out = append(out, blobDigestsOf(t, img)...)
		}
	case v1.Image:
		m, err := x.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Config.Digest.String())
		for _, l := range m.Layers {
			out = append(out, l.Digest.String())
		}
	}
	return out
}

// tarDir writes the files under dir as a tar at path, with extra entries appended.
func tarDir(t *testing.T, dir, path string, extra ...func(*tar.Writer)) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range extra {
		e(tw)
	}
	tw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImportLayout(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	host := newRegistry(t)
	var mu sync.Mutex
	var last archive.Progress
	calls := 0
	got, err := archive.Import(context.Background(), f.dir, host, archive.Options{Progress: func(p archive.Progress) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		last = p
	}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range got {
		names = append(names, i.String())
	}
	want := []string{
		"library/app:multi@" + digest(t, f.idx).String(),
		"org/tool:1@" + digest(t, f.img).String(),
	}
	if !slices.Equal(names, want) {
		t.Fatalf("imported %v, want %v", names, want)
	}
	requireSame(t, host, "library/app:multi", f.idx)
	requireSame(t, host, "org/tool:1", f.img)
	// The last image has a config and two layers.
	if calls != 2*3+3 || last.Blobs != 3 || last.BlobsTotal != 3 || last.Bytes != last.BytesTotal || last.Ref != "org/tool:1" {
		t.Fatalf("%d progress calls, last %+v", calls, last)
	}
}

func TestImportNaming(t *testing.T) {
	t.Parallel()
	img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 1, 100)
	dg := digest(t, img).String()
	for _, tc := range []struct {
		name, annotation, repo string
		want                   string // Imported.String() without the digest; empty: an error
	}{
		{name: "repo and tag", annotation: "team/app:2", want: "team/app:2"},
		{name: "docker hub name", annotation: "docker.io/library/alpine:3.19", want: "library/alpine:3.19"},
		{name: "registry host dropped", annotation: "registry.example:5000/a/b:c", want: "a/b:c"},
		{name: "override", annotation: "team/app:2", repo: "mirror/app", want: "mirror/app:2"},
		{name: "bare tag", annotation: "v1", repo: "team/app", want: "team/app:v1"},
		{name: "bare tag without repo", annotation: "v1"},
		{name: "no name", repo: "team/app", want: "team/app"},
		{name: "no name without repo"},
		{name: "by digest", annotation: "team/app@" + dg, want: "team/app"},
		{name: "another digest", annotation: "team/app@sha256:" + strings.Repeat("0", 64)},
		{name: "not a name", annotation: "Bad Name:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p, err := layout.Write(dir, empty.Index)
			if err != nil {
				t.Fatal(err)
			}
			var ann map[string]string
			if tc.annotation != "" {
				ann = map[string]string{refName: tc.annotation}
			}
			if err := p.AppendImage(img, layout.WithAnnotations(ann)); err != nil {
				t.Fatal(err)
			}
			host := newRegistry(t)
			got, err := archive.Import(context.Background(), dir, host, archive.Options{Repository: tc.repo})
			if tc.want == "" {
				if err == nil {
					t.Fatalf("imported %v", got)
				}
				if len(catalog(t, host)) != 0 {
					t.Fatalf("pushed %v", catalog(t, host))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || strings.TrimSuffix(got[0].String(), "@"+dg) != tc.want {
				t.Fatalf("imported %v, want %s", got, tc.want)
			}
		})
	}
}

func catalog(t *testing.T, host string) []string {
	t.Helper()
	reg, err := name.NewRegistry(host, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	repos, err := remote.Catalog(context.Background(), reg)
	if err != nil {
		t.Fatal(err)
	}
	return repos
}

func TestImportOCIArchive(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// A name ending in .json says nothing: the format comes from the content.
	tarPath := filepath.Join(t.TempDir(), "images.json")
	tarDir(t, f.dir, tarPath)
	host := newRegistry(t)
	tmp := t.TempDir()
	if _, err := archive.Import(context.Background(), tarPath, host, archive.Options{TempDir: tmp}); err != nil {
		t.Fatal(err)
	}
	requireSame(t, host, "library/app:multi", f.idx)
	requireSame(t, host, "org/tool:1", f.img)
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("left in the temp dir: %v", left)
	}
}

func TestImportDockerArchive(t *testing.T) {
	t.Parallel()
	img := testutil.NewImage(t, testutil.Docker, testutil.Linux("amd64"), 2, 1024)
	path := filepath.Join(t.TempDir(), "docker.tar")
	tag, err := name.NewTag("team/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		t.Fatal(err)
	}
	host := newRegistry(t)
	got, err := archive.Import(context.Background(), path, host, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].String() != "team/app:1@"+digest(t, img).String() {
		t.Fatalf("imported %v", got)
	}
	requireSame(t, host, "team/app:1", img)
}

// Export then Import, in every format, gives the same manifests and layers in the other registry.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	idx := testutil.NewIndex(t, 2, 1024, testutil.Linux("amd64"), testutil.Linux("arm64"))
	dockerImg := testutil.NewImage(t, testutil.Docker, testutil.Linux("amd64"), 2, 1024)
	src := newRegistry(t)
	if err := remote.WriteIndex(ref(t, src+"/team/multi:1"), idx); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, src+"/team/single:1"), dockerImg); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		format, ref string
		want        remote.Taggable
	}{
		{archive.FormatOCI, "team/multi:1", idx},
		{archive.FormatOCIArchive, "team/multi:1", idx},
		{archive.FormatOCI, "team/single:1", dockerImg},
		{archive.FormatOCIArchive, "team/single:1", dockerImg},
		{archive.FormatDockerArchive, "team/single:1", dockerImg},
		{archive.FormatOCIArchive, "team/multi@" + digest(t, idx).String(), idx},
		{archive.FormatDockerArchive, "team/single@" + digest(t, dockerImg).String(), dockerImg},
	} {
		t.Run(tc.format+" "+tc.ref, func(t *testing.T) {
			t.Parallel()
			dst := filepath.Join(t.TempDir(), "out")
			if err := archive.Export(context.Background(), src+"/"+tc.ref, dst, tc.format, archive.Options{}); err != nil {
				t.Fatal(err)
			}
			host := newRegistry(t)
			var opts archive.Options
			if strings.HasPrefix(tc.ref, "team/single@") {
				opts.Repository = "team/single" // a docker-archive of a digest has no RepoTags
			}
			got, err := archive.Import(context.Background(), dst, host, opts)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.ref
			if !strings.Contains(want, "@") {
				want += "@" + digest(t, tc.want.(interface{ Digest() (v1.Hash, error) })).String()
			}
			if len(got) != 1 || got[0].String() != want {
				t.Fatalf("imported %v, want %s", got, want)
			}
			requireSame(t, host, tc.ref, tc.want)
		})
	}
	t.Run("docker-archive of an index", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		err := archive.Export(context.Background(), src+"/team/multi:1", filepath.Join(dir, "out"), archive.FormatDockerArchive, archive.Options{})
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "--platform") {
			t.Fatalf("got %v", err)
		}
		arm := testutil.Linux("arm64")
		dst := filepath.Join(dir, "arm.tar")
		if err := archive.Export(context.Background(), src+"/team/multi:1", dst, archive.FormatDockerArchive, archive.Options{Platform: &arm}); err != nil {
			t.Fatal(err)
		}
		if err := archive.Export(context.Background(), src+"/team/single:1", filepath.Join(dir, "single.tar"), archive.FormatDockerArchive,
			archive.Options{Platform: &arm}); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("amd64 image exported for arm64: %v", err)
		}
		host := newRegistry(t)
		if _, err := archive.Import(context.Background(), dst, host, archive.Options{}); err != nil {
			t.Fatal(err)
		}
		// A docker-archive keeps config and layers; the OCI manifest becomes a Docker one.
		im, _ := idx.IndexManifest()
		want, err := idx.Image(im.Manifests[1].Digest)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Get(ref(t, host+"/team/multi:1"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := blobDigests(t, desc), blobDigestsOf(t, want); !slices.Equal(got, want) {
			t.Fatalf("blobs %v, want %v", got, want)
		}
	})
}

// With a token, every request carries it as a bearer token; a registry that wants it refuses
// anonymous pushes and pulls.
func TestToken(t *testing.T) {
	t.Parallel()
	host := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer s3cret" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	f := newFixture(t)
	if _, err := archive.Import(context.Background(), f.dir, host, archive.Options{}); err == nil {
		t.Fatal("anonymous import accepted")
	}
	if _, err := archive.Import(context.Background(), f.dir, host, archive.Options{Token: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out")
	if err := archive.Export(context.Background(), host+"/org/tool:1", dst, archive.FormatOCIArchive, archive.Options{}); err == nil {
		t.Fatal("anonymous export accepted")
	}
	if err := archive.Export(context.Background(), host+"/org/tool:1", dst, archive.FormatOCIArchive, archive.Options{Token: "s3cret"}); err != nil {
		t.Fatal(err)
	}
}
