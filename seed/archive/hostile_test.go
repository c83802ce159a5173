package archive_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/seed/archive"
)

// A hostile or damaged archive is refused before anything is pushed or written outside the
// import's temporary directory.
func TestImportHostileArchives(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	entry := func(hdr *tar.Header, body string) func(*tar.Writer) {
		return func(tw *tar.Writer) {
			hdr.Size = int64(len(body))
			if hdr.Typeflag != tar.TypeReg {
				hdr.Size = 0
			}
			if err := tw.WriteHeader(hdr); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write([]byte(body)); err != nil && hdr.Typeflag == tar.TypeReg {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name  string
		build func(t *testing.T, path string)
		want  error
	}{
		{"path traversal", func(t *testing.T, path string) {
			tarDir(t, f.dir, path, entry(&tar.Header{Name: "../x", Typeflag: tar.TypeReg, Mode: 0o644}, "owned"))
		}, errdefs.ErrInvalid},
		{"path traversal inside", func(t *testing.T, path string) {
			tarDir(t, f.dir, path, entry(&tar.Header{Name: "blobs/../../x", Typeflag: tar.TypeReg, Mode: 0o644}, "owned"))
		}, errdefs.ErrInvalid},
		{"absolute path", func(t *testing.T, path string) {
			tarDir(t, f.dir, path, entry(&tar.Header{Name: "/tmp/x", Typeflag: tar.TypeReg, Mode: 0o644}, "owned"))
		}, errdefs.ErrInvalid},
		{"symlink out", func(t *testing.T, path string) {
			tarDir(t, f.dir, path, entry(&tar.Header{Name: "blobs/sha256/evil", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}, ""))
		}, errdefs.ErrInvalid},
		{"hard link out", func(t *testing.T, path string) {
			tarDir(t, f.dir, path, entry(&tar.Header{Name: "evil", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}, ""))
		}, errdefs.ErrInvalid},
		{"device", func(t *testing.T, path string) {
			tarDir(t, f.dir, path, entry(&tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, ""))
		}, errdefs.ErrInvalid},
		{"truncated", func(t *testing.T, path string) {
			tarDir(t, f.dir, path)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/2+100); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrInvalid},
		{"absurd size", func(t *testing.T, path string) {
			tarDir(t, f.dir, path, func(tw *tar.Writer) {
				if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/big", Typeflag: tar.TypeReg, Size: 1 << 50}); err != nil {
					t.Fatal(err)
				}
				// Nothing follows: the header alone claims a petabyte.
			})
		}, errdefs.ErrTooLarge},
		{"missing index.json", func(t *testing.T, path string) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(f.dir)); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(dir, "index.json")); err != nil {
				t.Fatal(err)
			}
			tarDir(t, dir, path)
		}, fs.ErrNotExist},
		{"not an archive", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(strings.Repeat("hello ", 200)), 0o644); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrInvalid},
		{"gzip", func(t *testing.T, path string) {
			plain := path + ".plain"
			tarDir(t, f.dir, plain)
			b, err := os.ReadFile(plain)
			if err != nil {
				t.Fatal(err)
			}
			out, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			zw := gzip.NewWriter(out)
			zw.Write(b)
			zw.Close()
			out.Close()
		}, errdefs.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			work := t.TempDir()
			path := filepath.Join(work, "in.tar")
			tc.build(t, path)
			host := newRegistry(t)
			tmp := filepath.Join(work, "tmp", "deeper")
			if err := os.MkdirAll(tmp, 0o755); err != nil {
				t.Fatal(err)
			}
			got, err := archive.Import(context.Background(), path, host, archive.Options{TempDir: tmp})
			if !errors.Is(err, tc.want) {
				t.Fatalf("imported %v, error %v; want %v", got, err, tc.want)
			}
			t.Log(err)
			if repos := catalog(t, host); len(repos) != 0 {
				t.Fatalf("pushed %v", repos)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Fatalf("left in the temp dir: %v", left)
			}
			for _, p := range []string{filepath.Join(work, "tmp", "x"), filepath.Join(work, "x"), "/tmp/x"} {
				if b, err := os.ReadFile(p); err == nil && string(b) == "owned" {
					t.Fatalf("wrote %s", p)
				}
			}
		})
	}
}

// A layout whose blob does not hash to its digest: the image with it is not pushed, and a bad
// manifest stops the import before anything is pushed.
func TestImportDigestMismatch(t *testing.T) {
	t.Parallel()
	t.Run("layer", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		layers, err := f.img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		corrupt(t, f.dir, digest(t, layers[1]).Hex)
		host := newRegistry(t)
		got, err := archive.Import(context.Background(), f.dir, host, archive.Options{})
		if !errors.Is(err, errdefs.ErrDigestMismatch) {
			t.Fatalf("imported %v, error %v", got, err)
		}
		// The index before it in the layout is whole and went in; the image did not.
		if len(got) != 1 || got[0].Repository != "library/app" {
			t.Fatalf("imported %v", got)
		}
		if _, err := remote.Head(ref(t, host+"/org/tool:1")); err == nil {
			t.Fatal("image with a corrupt layer was pushed")
		}
		if _, err := remote.Head(ref(t, host+"/org/tool@"+digest(t, f.img).String())); err == nil {
			t.Fatal("image with a corrupt layer was pushed by digest")
		}
	})
	t.Run("manifest", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		corrupt(t, f.dir, digest(t, f.img).Hex)
		host := newRegistry(t)
		got, err := archive.Import(context.Background(), f.dir, host, archive.Options{})
		if !errors.Is(err, errdefs.ErrDigestMismatch) {
			t.Fatalf("imported %v, error %v", got, err)
		}
		if repos := catalog(t, host); len(got) != 0 || len(repos) != 0 {
			t.Fatalf("imported %v, pushed %v", got, repos)
		}
	})
}

// corrupt flips a byte in the middle of the layout's blob hex, keeping its size.
func corrupt(t *testing.T, dir, hex string) {
	t.Helper()
	p := filepath.Join(dir, "blobs", "sha256", hex)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestExportDestination(t *testing.T) {
	t.Parallel()
	host := newRegistry(t)
	f := newFixture(t)
	if _, err := archive.Import(context.Background(), f.dir, host, archive.Options{}); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{archive.FormatOCI, archive.FormatOCIArchive, archive.FormatDockerArchive} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			dst := filepath.Join(dir, "out")
			if err := os.WriteFile(dst, []byte("keep me"), 0o644); err != nil {
				t.Fatal(err)
			}
			err := archive.Export(context.Background(), host+"/org/tool:1", dst, format, archive.Options{})
			if !errors.Is(err, fs.ErrExist) {
				t.Fatalf("export over an existing file: %v", err)
			}
			if b, _ := os.ReadFile(dst); string(b) != "keep me" {
				t.Fatalf("dst now %q", b)
			}
			if err := archive.Export(context.Background(), host+"/org/tool:1", dst, format, archive.Options{Overwrite: true}); err != nil {
				t.Fatal(err)
			}
			if err := archive.Export(context.Background(), host+"/org/tool:1", dst, format, archive.Options{Overwrite: true}); err != nil {
				t.Fatal("export over its own output:", err)
			}
			// A failed export (no such tag) leaves nothing behind, not even its temporary files.
			missing := filepath.Join(dir, "missing")
			if err := archive.Export(context.Background(), host+"/org/tool:nope", missing, format, archive.Options{}); err == nil {
				t.Fatal("exported a missing tag")
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 || entries[0].Name() != "out" {
				t.Fatalf("dir holds %v", entries)
			}
		})
	}
	t.Run("failure mid-way", func(t *testing.T) {
		t.Parallel()
		// The registry loses a layer: the manifest resolves, the pull fails part-way through.
		h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
		good := httptest.NewServer(h)
		defer good.Close()
		layers, err := f.img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		lost := "/blobs/" + digest(t, layers[1]).String()
		broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, lost) {
				http.Error(w, "lost", http.StatusNotFound)
				return
			}
			h.ServeHTTP(w, r)
		}))
		defer broken.Close()
		if _, err := archive.Import(context.Background(), f.dir, strings.TrimPrefix(good.URL, "http://"), archive.Options{}); err != nil {
			t.Fatal(err)
		}
		for _, format := range []string{archive.FormatOCI, archive.FormatOCIArchive, archive.FormatDockerArchive} {
			dir := t.TempDir()
			err := archive.Export(context.Background(), strings.TrimPrefix(broken.URL, "http://")+"/org/tool:1", filepath.Join(dir, "out"), format, archive.Options{})
			if err == nil {
				t.Fatalf("%s: exported an image with a lost layer", format)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("%s: failed export left %v", format, entries)
			}
		}
	})
}
