package store

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// TestCommitRejects checks that content that is not what its digest and size say never becomes
// visible, and leaves nothing behind once the writer is closed.
func TestCommitRejects(t *testing.T) {
	t.Parallel()
	body := []byte("the real content")
	for _, tc := range []struct {
		name   string
		d      digest.Digest
		size   int64
		writes [][]byte
	}{
		{name: "other content of the same size", d: digest.FromBytes(body), size: int64(len(body)), writes: [][]byte{[]byte("the fake content")}},
		{name: "other content of unknown size", d: digest.FromBytes(body), size: -1, writes: [][]byte{[]byte("fake")}},
		{name: "short", d: digest.FromBytes(body), size: int64(len(body)), writes: [][]byte{body[:5]}},
		{name: "nothing written", d: digest.FromBytes(body), size: int64(len(body))},
		{name: "size smaller than the content", d: digest.FromBytes(body), size: 4, writes: [][]byte{body[:4]}},
		{name: "size larger than the content", d: digest.FromBytes(body), size: int64(len(body)) + 1, writes: [][]byte{body}},
		{name: "right bytes, sha512 digest of other bytes", d: digest.SHA512.FromString("other"), size: int64(len(body)), writes: [][]byte{body}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir)
			w, err := s.NewWriter(tc.d, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.writes {
				if _, err := w.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Verify(); !errors.Is(err, errdefs.ErrDigestMismatch) {
				t.Errorf("Verify = %v, want ErrDigestMismatch", err)
			}
			if err := w.Commit(""); !errors.Is(err, errdefs.ErrDigestMismatch) {
				t.Errorf("Commit = %v, want ErrDigestMismatch", err)
			}
			if _, err := s.Stat(tc.d); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Stat after a failed Commit = %v, want ErrNotFound", err)
			}
			if _, n := s.Usage(); n != 0 {
				t.Errorf("%d objects after a failed Commit", n)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			// What the writer reserved or wrote counted until Close, not after.
			checkUsage(t, s, 0, 0)
			if names := dirEntries(t, filepath.Join(dir, "tmp")); len(names) != 0 {
				t.Errorf("tmp holds %q after Close", names)
			}
			if names := dirEntries(t, filepath.Join(dir, "blobs")); len(names) != 0 {
				t.Errorf("blobs holds %q after a failed Commit", names)
			}
		})
	}
}

func TestWritePastExpectedSize(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	body := []byte("0123456789")
	d := digest.FromBytes(body)
	w, err := s.NewWriter(d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(body[:6]); err != nil {
		t.Fatal(err)
	}
	n, err := w.Write([]byte("6789X"))
	if !errors.Is(err, errdefs.ErrDigestMismatch) {
		t.Fatalf("Write past the expected size = %d, %v; want ErrDigestMismatch", n, err)
	}
	if n != 0 || w.Written() != 6 {
		t.Errorf("the refused write wrote %d bytes, Written() = %d", n, w.Written())
	}
	// The refused write left nothing: the right rest still commits.
	if _, err := w.Write(body[6:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(""); err != nil {
		t.Fatal(err)
	}
}

// TestReadWhileWriting checks that bytes written are readable before Commit.
func TestReadWhileWriting(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	body := []byte("0123456789")
	w, err := s.NewWriter(digest.FromBytes(body), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(body[:4]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := w.File().ReadAt(buf, 0); err != nil || string(buf) != "0123" {
		t.Fatalf("ReadAt = %q, %v", buf, err)
	}
	if _, err := s.Stat(digest.FromBytes(body)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("content visible before Commit: %v", err)
	}
}

// TestCommitTwice checks that Commit is idempotent, that committing content already present
// succeeds without counting it twice, and that Close after Commit keeps the content.
func TestCommitTwice(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	body := []byte("twice")
	d := digest.FromBytes(body)
	w, err := s.NewWriter(d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := w.Commit(""); err != nil {
			t.Fatalf("Commit %d: %v", i, err)
		}
	}
	for i := 0; i < 2; i++ {
		if err := w.Close(); err != nil {
			t.Fatalf("Close %d: %v", i, err)
		}
	}
	commitBytes(t, s, d, body, manifestType) // present already; records a media type
	checkUsage(t, s, int64(len(body)), 1)
	if info, err := s.Stat(d); err != nil || info.MediaType != manifestType {
		t.Errorf("Stat = %+v, %v", info, err)
	}
}

// TestConcurrentWriters checks that writers of the same digest racing to commit all succeed,
// that the content is there once, and that it is counted once.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		writers int
		size    int
	}{
		{name: "two small", writers: 2, size: 10},
		{name: "many small", writers: 16, size: 100},
		{name: "several large", writers: 4, size: 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir)
			body := bytes.Repeat([]byte("z"), tc.size)
			d := digest.FromBytes(body)
			var (
				wg    sync.WaitGroup
				start = make(chan struct{})
				errs  = make([]error, tc.writers)
			)
			for i := 0; i < tc.writers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					w, err := s.NewWriter(d, int64(len(body)))
					if err != nil {
						errs[i] = err
						return
					}
					defer w.Close()
					if _, err := w.Write(body); err != nil {
						errs[i] = err
						return
					}
					<-start
					errs[i] = w.Commit("")
				}()
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("writer %d: %v", i, err)
				}
			}
			f, _, err := s.Open(d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(f)
			f.Close()
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("content after concurrent commits: %d bytes, %v", len(got), err)
			}
			checkUsage(t, s, int64(tc.size), 1)
			if names := dirEntries(t, filepath.Join(dir, "tmp")); len(names) != 0 {
				t.Errorf("tmp holds %q", names)
			}
		})
	}
}
