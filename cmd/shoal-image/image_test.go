package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	testVersion = "v0.0.0-test"
	testEpoch   = int64(1700000000)
)

var (
	shared     *Built
	sharedErr  error
	sharedOnce sync.Once
)

func testConfig(epoch int64, platforms string) Config {
	return Config{Version: testVersion, Revision: "0123456789abcdef0123456789abcdef01234567", Epoch: &epoch,
		Source: DefaultSource, Platforms: platforms}
}

// built is the image of this checkout for both platforms, built once for the package's tests.
func built(t *testing.T) *Built {
	t.Helper()
	sharedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		shared, sharedErr = Build(ctx, testConfig(testEpoch, "linux/amd64,linux/arm64"))
	})
	if sharedErr != nil {
		t.Fatalf("building the image: %v", sharedErr)
	}
	return shared
}

func digest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// TestBuildIsReproducible builds the image again, later, from a copy of the source tree in
// another directory without .git (as from a source tarball): the index digest must not change.
// A build from another source date must give other manifests, or the date would not be what
// fixes the times.
func TestBuildIsReproducible(t *testing.T) {
	first := built(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cfg := testConfig(testEpoch, "linux/amd64,linux/arm64")
	cfg.Dir = copySource(t)
	again, err := Build(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := digest(t, first.Index), digest(t, again.Index); a != b {
		t.Fatalf("two builds of one tree gave index %s and %s", a, b)
	}
	later, err := Build(ctx, testConfig(testEpoch+1, "linux/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, image(t, later, "amd64")) == digest(t, image(t, first, "amd64")) {
		t.Fatal("another source date gave the same amd64 image: the date does not reach the image")
	}
}

// copySource copies the module's files, without .git, into a new directory.
func copySource(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	dst := filepath.Join(t.TempDir(), "src")
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		switch {
		case d.Name() == ".git":
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		case !d.Type().IsRegular():
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying the source: %v", err)
	}
	return dst
}

func image(t *testing.T, b *Built, arch string) v1.Image {
	t.Helper()
	im, err := b.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.Architecture == arch {
			img, err := b.Index.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img
		}
	}
	t.Fatalf("no %s image in the index", arch)
	return nil
}

// TestImageShape checks the index and each platform's image: media types, platforms, the
// non-root user, the entrypoint, labels and times.
func TestImageShape(t *testing.T) {
	b := built(t)
	mt, err := b.Index.MediaType()
	if err != nil || mt != types.OCIImageIndex {
		t.Fatalf("index media type %q, %v", mt, err)
	}
	im, err := b.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if got := im.Annotations["org.opencontainers.image.version"]; got != testVersion {
		t.Errorf("index version annotation %q", got)
	}
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
	}
	if strings.Join(platforms, ",") != "linux/amd64,linux/arm64/v8" {
		t.Fatalf("index platforms %v, want linux/amd64 and linux/arm64/v8", platforms)
	}
	epoch := time.Unix(testEpoch, 0).UTC()
	for _, d := range im.Manifests {
		t.Run(d.Platform.Architecture, func(t *testing.T) {
			img, err := b.Index.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
				t.Errorf("manifest media type %q", mt)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS != "linux" || cf.Architecture != d.Platform.Architecture || cf.Variant != d.Platform.Variant {
				t.Errorf("config platform %s/%s/%s, index says %s", cf.OS, cf.Architecture, cf.Variant, d.Platform)
			}
			if cf.Config.User != "65532:65532" {
				t.Errorf("user %q, want 65532:65532", cf.Config.User)
			}
			if strings.Join(cf.Config.Entrypoint, " ") != BinaryPath || len(cf.Config.Cmd) != 0 {
				t.Errorf("entrypoint %q cmd %q", cf.Config.Entrypoint, cf.Config.Cmd)
			}
			for k, want := range map[string]string{
				"org.opencontainers.image.version":  testVersion,
				"org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
				"org.opencontainers.image.source":   DefaultSource,
				"org.opencontainers.image.created":  "2023-11-14T22:13:20Z",
			} {
				if got := cf.Config.Labels[k]; got != want {
					t.Errorf("label %s = %q, want %q", k, got, want)
				}
			}
			if !cf.Created.Time.Equal(epoch) {
				t.Errorf("created %s, want %s", cf.Created.Time, epoch)
			}
			for _, h := range cf.History {
				if !h.Created.Time.Equal(epoch) {
					t.Errorf("history %q created %s", h.CreatedBy, h.Created.Time)
				}
			}
			files := readFiles(t, img, epoch)
			checkBase(t, files)
			checkBinary(t, files, d.Platform.Architecture)
		})
	}
}

// entry is a file of the image's flattened filesystem.
type entry struct {
	hdr  *tar.Header
	body []byte
}

// readFiles reads every layer's tar, checking that every entry carries the source date.
func readFiles(t *testing.T, img v1.Image, epoch time.Time) map[string]entry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]entry{}
	for _, l := range layers {
		if mt, _ := l.MediaType(); mt != types.OCILayer {
			t.Errorf("layer media type %q", mt)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if !h.ModTime.Equal(epoch) {
				t.Errorf("%s: mtime %s, want the source date %s", h.Name, h.ModTime, epoch)
			}
			body, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files["/"+strings.TrimSuffix(h.Name, "/")] = entry{hdr: h, body: body}
		}
		_ = rc.Close()
	}
	return files
}

func checkBase(t *testing.T, files map[string]entry) {
	t.Helper()
	if !strings.Contains(string(files["/etc/passwd"].body), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no user 65532:\n%s", files["/etc/passwd"].body)
	}
	if !strings.Contains(string(files["/etc/group"].body), "nonroot:x:65532:") {
		t.Errorf("/etc/group has no group 65532")
	}
	if h := files["/tmp"].hdr; h == nil || h.Typeflag != tar.TypeDir || h.Mode != 0o1777 {
		t.Errorf("/tmp is not a world-writable sticky directory: %+v", h)
	}
	if h := files["/var/lib/shoal"].hdr; h == nil || h.Uid != UID || h.Gid != GID {
		t.Errorf("/var/lib/shoal (the default --data-dir) is not owned by 65532: %+v", h)
	}
	certs := 0
	rest := files[caBundlePath].body
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		certs++
	}
	if certs < 100 {
		t.Errorf("%s holds %d certificates; the Mozilla store has over 100", caBundlePath, certs)
	}
}

// checkBinary checks that shoal is a static executable for the platform, and runs it where the
// machine can: `shoal --version` must print the stamped version.
func checkBinary(t *testing.T, files map[string]entry, arch string) {
	t.Helper()
	bin, ok := files[BinaryPath]
	if !ok || bin.hdr.Mode != 0o755 {
		t.Fatalf("%s missing or not executable", BinaryPath)
	}
	f, err := elf.NewFile(bytes.NewReader(bin.body))
	if err != nil {
		t.Fatalf("%s is not ELF: %v", BinaryPath, err)
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != want {
		t.Errorf("ELF machine %s, want %s", f.Machine, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%s)", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs %v", libs)
	}
	if arch != runtime.GOARCH || runtime.GOOS != "linux" {
		return
	}
	path := filepath.Join(t.TempDir(), "shoal")
	if err := os.WriteFile(path, bin.body, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "shoal version "+testVersion {
		t.Errorf("shoal --version: %v: %q, want %q", err, out, "shoal version "+testVersion)
	}
}

// TestRunsAsNonRootInItsFilesystem unpacks the amd64 image and runs its shoal chrooted into it as
// user 65532, as a runtime would: `shoal id` creates the node's identity key under the default
// data directory, so the user can write there with nothing mounted.
func TestRunsAsNonRootInItsFilesystem(t *testing.T) {
	if runtime.GOARCH != "amd64" || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root on linux/amd64 under CI")
		}
		t.Skip("needs root on linux/amd64 (chroot)")
	}
	b := built(t)
	root := t.TempDir()
	files := readFiles(t, image(t, b, "amd64"), time.Unix(testEpoch, 0).UTC())
	for name, e := range files {
		p := filepath.Join(root, name)
		switch e.hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, e.body, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, e := range files { // modes and owners once every file exists
		p := filepath.Join(root, name)
		if err := os.Chown(p, e.hdr.Uid, e.hdr.Gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, os.FileMode(e.hdr.Mode&0o777)|modeBits(e.hdr.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(BinaryPath, "id", "--data-dir", "/var/lib/shoal")
	cmd.Dir = "/"
	cmd.Env = []string{"HOME=/home/nonroot"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: UID, Gid: GID}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(strings.TrimSpace(string(out)), "12D3Koo") {
		t.Fatalf("shoal id as 65532 in the image's filesystem: %v\n%s", err, out)
	}
	fi, err := os.Stat(filepath.Join(root, "var/lib/shoal/identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != UID {
		t.Errorf("identity key owned by %d, want %d", st.Uid, UID)
	}
}

func modeBits(m int64) os.FileMode {
	if m&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}

// TestWriteLayout writes the image as an OCI layout and reads it back by its version's name.
func TestWriteLayout(t *testing.T) {
	b := built(t)
	dir := filepath.Join(t.TempDir(), "layout")
	for range 2 { // a second write replaces the entry rather than adding one
		if err := WriteLayout(dir, b); err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != testVersion {
		t.Fatalf("layout index %+v, want one entry named %s", im.Manifests, testVersion)
	}
	if got, want := im.Manifests[0].Digest.String(), digest(t, b.Index); got != want {
		t.Fatalf("layout names %s, built %s", got, want)
	}
	idx, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, idx) != digest(t, b.Index) {
		t.Fatal("the layout's index differs from the built one")
	}
}

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name      string
		platforms string
		version   string
	}{
		{name: "windows", platforms: "windows/amd64", version: "v1"},
		{name: "no arch", platforms: "linux", version: "v1"},
		{name: "arm variant", platforms: "linux/arm/v7", version: "v1"},
		{name: "empty platform", platforms: "linux/amd64,", version: "v1"},
		{name: "version with a space", platforms: "linux/amd64", version: "v1 -X main.x=y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testEpoch
			_, err := Build(context.Background(), Config{Version: tc.version, Revision: "r", Epoch: &e, Platforms: tc.platforms})
			if err == nil {
				t.Fatal("built anyway")
			}
		})
	}
	if err := newApp().Run([]string{"shoal-image"}); err == nil || !strings.Contains(err.Error(), "nothing to do") {
		t.Fatalf("no --out or --push: %v", err)
	}
}
