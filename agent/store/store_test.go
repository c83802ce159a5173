package store

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/internal/tags"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

const manifestType = "application/vnd.oci.image.manifest.v1+json"

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// commitBytes writes body under d in two pieces and commits it.
func commitBytes(t *testing.T, s *Store, d digest.Digest, body []byte, mediaType string) {
	t.Helper()
	w, err := s.NewWriter(d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	half := len(body) / 2
	for _, p := range [][]byte{body[:half], body[half:]} {
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(mediaType); err != nil {
		t.Fatal(err)
	}
}

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func checkUsage(t *testing.T, s *Store, bytes, objects int64) {
	t.Helper()
	if b, n := s.Usage(); b != bytes || n != objects {
		t.Errorf("Usage() = %d bytes in %d objects, want %d in %d", b, n, bytes, objects)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		alg       digest.Algorithm
		body      []byte
		mediaType string
	}{
		{name: "sha256 blob", alg: digest.SHA256, body: []byte("a layer's bytes")},
		{name: "sha256 manifest", alg: digest.SHA256, body: []byte(`{"schemaVersion":2}`), mediaType: manifestType},
		{name: "sha512 blob", alg: digest.SHA512, body: bytes.Repeat([]byte("x"), 100000)},
		{name: "sha512 manifest", alg: digest.SHA512, body: []byte(`{"schemaVersion":2}`), mediaType: manifestType},
		{name: "sha384 blob", alg: digest.SHA384, body: []byte("sha384")},
		{name: "empty blob", alg: digest.SHA256, body: []byte{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, t.TempDir())
			d := tc.alg.FromBytes(tc.body)
			commitBytes(t, s, d, tc.body, tc.mediaType)

			info, err := s.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			want := Info{Digest: d, Size: int64(len(tc.body)), MediaType: tc.mediaType}
			if info != want {
				t.Errorf("Stat = %+v, want %+v", info, want)
			}
			f, info, err := s.Open(d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(f)
			f.Close()
			if err != nil || !bytes.Equal(got, tc.body) || info != want {
				t.Errorf("Open read %d bytes, %v, info %+v; want %d bytes, info %+v", len(got), err, info, len(tc.body), want)
			}
			body, mt, err := s.ReadManifest(d, 4<<20)
			switch {
			case tc.mediaType == "":
				if !errors.Is(err, errdefs.ErrNotFound) {
					t.Errorf("ReadManifest of a blob without media type = %v, want ErrNotFound", err)
				}
			case err != nil || mt != tc.mediaType || !bytes.Equal(body, tc.body):
				t.Errorf("ReadManifest = %q, %q, %v", body, mt, err)
			}
			checkUsage(t, s, int64(len(tc.body)), 1)
		})
	}
}

func TestReadManifestLimit(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	body := []byte(`{"schemaVersion":2}`)
	d := digest.FromBytes(body)
	if err := s.PutManifest(d, manifestType, body); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReadManifest(d, int64(len(body))-1); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Errorf("ReadManifest over the limit = %v, want ErrTooLarge", err)
	}
	if got, _, err := s.ReadManifest(d, int64(len(body))); err != nil || !bytes.Equal(got, body) {
		t.Errorf("ReadManifest at the limit = %q, %v", got, err)
	}
}

func TestPutManifest(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2}`)
	for _, tc := range []struct {
		name      string
		d         digest.Digest
		mediaType string
		err       error
	}{
		{name: "ok", d: digest.FromBytes(body), mediaType: manifestType},
		{name: "no media type", d: digest.FromBytes(body), err: errdefs.ErrInvalid},
		{name: "wrong digest", d: digest.FromString("other"), mediaType: manifestType, err: errdefs.ErrDigestMismatch},
		{name: "invalid digest", d: "sha256:../../etc", mediaType: manifestType, err: errdefs.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir)
			err := s.PutManifest(tc.d, tc.mediaType, body)
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("PutManifest = %v, want %v", err, tc.err)
			}
			if _, err := s.Stat(digest.FromBytes(body)); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("content visible after a failed PutManifest: %v", err)
			}
			if names := dirEntries(t, filepath.Join(dir, "tmp")); len(names) != 0 {
				t.Errorf("tmp holds %q after a failed PutManifest", names)
			}
			checkUsage(t, s, 0, 0)
		})
	}
}

// TestHostileDigests checks that no digest can name a file outside the blob directory: each is
// refused with ErrInvalid by every method, and nothing is created.
func TestHostileDigests(t *testing.T) {
	t.Parallel()
	hex64 := strings.Repeat("a", 64)
	for _, hostile := range []string{
		"sha256:../../etc",
		"sha256:../../../../../../../../../../../../../../../../../../../etc/passwd",
		"sha256:" + hex64[:61] + "/..",
		"sha256:" + hex64[:58] + "/../..",
		"sha256/../../" + hex64,
		"../../sha256:" + hex64,
		"..:" + hex64,
		"sha256:/" + hex64[1:],
		"sha256:" + hex64 + "/",
		"sha256:" + hex64 + "\x00",
		"sha256:" + strings.ToUpper(hex64),
		"sha256:",
		":" + hex64,
		"",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha512:" + hex64,
		"sha256:" + hex64[:63],
	} {
		d := digest.Digest(hostile)
		t.Run(hostile, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir)
			if p, err := s.path(d); !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("path(%q) = %q, %v; want ErrInvalid", d, p, err)
			}
			checks := map[string]error{}
			_, checks["Stat"] = s.Stat(d)
			_, _, checks["Open"] = s.Open(d)
			_, _, checks["ReadManifest"] = s.ReadManifest(d, 1<<20)
			checks["Delete"] = s.Delete(d)
			checks["PutManifest"] = s.PutManifest(d, manifestType, []byte("{}"))
			_, checks["NewWriter"] = s.NewWriter(d, 2)
			for m, err := range checks {
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Errorf("%s(%q) = %v, want ErrInvalid", m, d, err)
				}
			}
			if names := dirEntries(t, filepath.Join(dir, "tmp")); len(names) != 0 {
				t.Errorf("tmp holds %q", names)
			}
			if names := dirEntries(t, filepath.Join(dir, "blobs")); len(names) != 0 {
				t.Errorf("blobs holds %q", names)
			}
		})
	}
}

// TestPathStaysInside checks the mapping of valid digests.
func TestPathStaysInside(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	for _, d := range []digest.Digest{digest.FromString("a"), digest.SHA384.FromString("a"), digest.SHA512.FromString("a")} {
		p, err := s.path(d)
		if err != nil {
			t.Fatal(err)
		}
		want := filepath.Join(dir, "blobs", string(d.Algorithm()), d.Encoded())
		if p != want {
			t.Errorf("path(%s) = %s, want %s", d, p, want)
		}
	}
}

func TestReaderSurvivesDelete(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	body := bytes.Repeat([]byte("0123456789"), 10000)
	d := digest.FromBytes(body)
	commitBytes(t, s, d, body, manifestType)

	f, _, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first := make([]byte, 10)
	if _, err := io.ReadFull(f, first); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Stat after Delete = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Open(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Open after Delete = %v, want ErrNotFound", err)
	}
	if err := s.Delete(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	checkUsage(t, s, 0, 0)
	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(append(first, rest...), body) {
		t.Fatalf("reader after Delete got %d bytes, %v; want the whole %d", len(first)+len(rest), err, len(body))
	}

	// The media type went with the content: the same bytes committed as a plain blob have none.
	commitBytes(t, s, d, body, "")
	if info, err := s.Stat(d); err != nil || info.MediaType != "" {
		t.Errorf("Stat after recommit = %+v, %v; want no media type", info, err)
	}
}

// TestSecondOpenFails checks that a data directory has one owner: a second Open fails clearly
// while the first store is open, and leaves the first store's writes in progress alone.
func TestSecondOpenFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	body := []byte("written across a second Open")
	d := digest.FromBytes(body)
	w, err := s.NewWriter(d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(body[:5]); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	s2, err := Open(dir)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a data directory in use succeeded")
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open error %q does not say the directory is in use", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("second Open took %v to fail", d)
	}

	if _, err := w.Write(body[5:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(""); err != nil {
		t.Fatalf("commit after a failed second Open: %v", err)
	}
	if _, err := s.Stat(d); err != nil {
		t.Fatal(err)
	}
}

func TestReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	blob := bytes.Repeat([]byte("b"), 5000)
	manifest := []byte(`{"schemaVersion":2}`)
	bd, md := digest.FromBytes(blob), digest.SHA512.FromBytes(manifest)
	commitBytes(t, s, bd, blob, "")
	commitBytes(t, s, md, manifest, manifestType)
	gone := []byte("deleted before the restart")
	gd := digest.FromBytes(gone)
	commitBytes(t, s, gd, gone, "")
	if err := s.Delete(gd); err != nil {
		t.Fatal(err)
	}
	rec := tags.Record{Digest: md, MediaType: manifestType, Resolved: time.Now().Add(-time.Hour).Truncate(time.Second).UTC()} // within tags.MaxAge
	if err := s.Tags().Put("docker.io/library/alpine:latest", rec); err != nil {
		t.Fatal(err)
	}
	wantBytes, wantObjects := s.Usage()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	checkUsage(t, s, wantBytes, wantObjects)
	if wantBytes != int64(len(blob)+len(manifest)) || wantObjects != 2 {
		t.Errorf("usage before the restart was %d bytes in %d objects", wantBytes, wantObjects)
	}
	if info, err := s.Stat(bd); err != nil || info.Size != int64(len(blob)) {
		t.Errorf("Stat(blob) = %+v, %v", info, err)
	}
	if body, mt, err := s.ReadManifest(md, 1<<20); err != nil || mt != manifestType || !bytes.Equal(body, manifest) {
		t.Errorf("ReadManifest = %q, %q, %v", body, mt, err)
	}
	if _, err := s.Stat(gd); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("deleted content is back: %v", err)
	}
	tags, err := s.Tags().List("docker.io/")
	if err != nil {
		t.Fatal(err)
	}
	if got := tags["docker.io/library/alpine:latest"]; got.Digest != rec.Digest || got.MediaType != rec.MediaType || !got.Resolved.Equal(rec.Resolved) {
		t.Errorf("tag after reopen = %+v, want %+v", got, rec)
	}
}

// TestOpenClearsTmp checks that temporary files of a previous run are removed at Open and that
// committed content is left alone.
func TestOpenClearsTmp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("committed")
	d := digest.FromBytes(body)
	commitBytes(t, s, d, body, "")
	// A writer never closed, as after a crash.
	w, err := s.NewWriter(digest.FromString("partial"), 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("par")); err != nil {
		t.Fatal(err)
	}
	w.File().Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.WriteFile(filepath.Join(tmp, "leftover"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(tmp, "subdir", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if len(dirEntries(t, tmp)) != 3 {
		t.Fatalf("tmp holds %q before reopening", dirEntries(t, tmp))
	}

	s = openStore(t, dir)
	if names := dirEntries(t, tmp); len(names) != 0 {
		t.Errorf("tmp holds %q after Open", names)
	}
	if _, err := s.Stat(d); err != nil {
		t.Errorf("committed content lost at Open: %v", err)
	}
	checkUsage(t, s, int64(len(body)), 1)
}
