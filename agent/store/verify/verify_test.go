package verify

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/agent/store/layout"
	"github.com/shoal-oci/shoal/internal/chunks"
)

const chunkSize = 64 << 10

// fixture is a stopped node's data directory: a blob of several chunks (with its map), a
// manifest, a pin keeping both, and a partial file of a third blob holding two of its chunks.
type fixture struct {
	dir                     string
	blob, manifest, partial digest.Digest
	partialBytes            []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	s, err := store.Open(f.dir, store.WithChunkSize(chunkSize))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := random(t, 5*chunkSize+100)
	f.blob = digest.FromBytes(body)
	w, err := s.NewWriter(f.blob, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(""); err != nil {
		t.Fatal(err)
	}
	w.Close()
	man := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	f.manifest = digest.FromBytes(man)
	if err := s.PutManifest(f.manifest, "application/vnd.oci.image.manifest.v1+json", man); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pins().Put("app:v1", []byte(`{"digests":["`+f.blob+`","`+f.manifest+`"],"created":"2026-01-01T00:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	// A partial: chunks 0 and 2 of four landed and verified against the blob's map, then the
	// node stopped.
	f.partialBytes = random(t, 4*chunkSize)
	f.partial = digest.FromBytes(f.partialBytes)
	m, err := chunks.Read(context.Background(), bytes.NewReader(f.partialBytes), digest.SHA256, chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := s.ResumeWriter(f.partial, int64(len(f.partialBytes)))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		off, n := m.Range(i)
		if _, err := pw.WriteAt(f.partialBytes[off:off+n], off); err != nil {
			t.Fatal(err)
		}
		if err := pw.MarkChunk(i, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := pw.Suspend(); err != nil {
		t.Fatal(err)
	}
	return f
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func find(t *testing.T, r *Report, d digest.Digest) Object {
	t.Helper()
	for _, o := range r.Objects {
		if o.Digest == d {
			return o
		}
	}
	t.Fatalf("no verdict on %s in %+v", d, r.Objects)
	return Object{}
}

func TestCleanDirectory(t *testing.T) {
	f := newFixture(t)
	var seen int
	r, err := Dir(context.Background(), f.dir, Options{OnObject: func(Object) { seen++ }})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Bad != 0 || len(r.Objects) != 2 || seen != 2 {
		t.Fatalf("report of a clean directory: %+v", r)
	}
	if o := find(t, r, f.blob); !o.OK || o.Map != "ok" || len(o.Pins) != 1 {
		t.Errorf("blob: %+v, want OK with its map checked and its pin named", o)
	}
	if o := find(t, r, f.manifest); !o.OK || o.MediaType == "" || o.Map != "none" {
		t.Errorf("manifest: %+v, want OK with its media type and no map", o)
	}
	if len(r.Partials) != 1 {
		t.Fatalf("partials: %+v", r.Partials)
	}
	if p := r.Partials[0]; p.Digest != f.partial || p.Outcome != Resume || p.Covered != 4 || p.Verified != 2 {
		t.Errorf("partial: %+v, want resumable with 2 of its 4 covered chunks verifying", p)
	}
}

// TestDamageFoundAndRepaired damages what a crash, a disk or a hand can: a committed object's
// bytes, a recorded map, a stray file, a link, a partial's held chunk. The check finds each, the repair removes
// exactly the bad objects with their records and pins, and the store then opens and takes the
// content again.
func TestDamageFoundAndRepaired(t *testing.T) {
	f := newFixture(t)
	flip(t, layout.BlobPath(f.dir, f.blob), 3*chunkSize+7)
	// The manifest's content is fine but its recorded map is another blob's.
	other, err := chunks.Read(context.Background(), bytes.NewReader(f.partialBytes), digest.SHA256, chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	other.Digest = f.manifest
	raw, _ := other.MarshalBinary()
	withDB(t, f.dir, func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists([]byte(layout.MapsBucket))
		if err != nil {
			return err
		}
		return bk.Put([]byte(f.manifest), raw)
	})
	stray := filepath.Join(f.dir, layout.BlobsDir, "sha256", "not-a-digest")
	if err := os.WriteFile(stray, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	flip(t, layout.PartialPath(f.dir, f.partial), 2*chunkSize+1)
	// A link named like content, to content: the store writes no links.
	linked := digest.FromString("elsewhere")
	if err := os.WriteFile(filepath.Join(f.dir, "elsewhere"), []byte("elsewhere"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(f.dir, "elsewhere"), layout.BlobPath(f.dir, linked)); err != nil {
		t.Fatal(err)
	}

	r, err := Dir(context.Background(), f.dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() || r.Bad != 4 {
		t.Fatalf("want 4 bad objects, got %d: %+v", r.Bad, r.Objects)
	}
	if o := find(t, r, f.blob); o.OK || o.Problem == "" {
		t.Errorf("damaged blob: %+v", o)
	}
	if o := find(t, r, f.manifest); o.OK || o.Map != "disagrees with the content" {
		t.Errorf("manifest with a wrong map: %+v", o)
	}
	if p := r.Partials[0]; p.Outcome != Resume || p.Verified != 1 {
		t.Errorf("partial with a damaged chunk: %+v, want 1 chunk verifying", p)
	}
	// The store's own resume holds exactly the chunks the check counted.
	func() {
		s, err := store.Open(f.dir, store.WithChunkSize(chunkSize))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		w, err := s.ResumeWriter(f.partial, int64(len(f.partialBytes)))
		if err != nil {
			t.Fatal(err)
		}
		if held := w.Held().Count(); held != r.Partials[0].Verified {
			t.Errorf("the store resumes with %d chunks, the check said %d", held, r.Partials[0].Verified)
		}
		_ = w.Suspend()
	}()

	r, err = Dir(context.Background(), f.dir, Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	removed := 0
	for _, o := range r.Objects {
		if o.Removed {
			removed++
		}
	}
	if removed != 4 || len(r.RemovedPins) != 1 || r.RemovedPins[0] != "app:v1" {
		t.Fatalf("repair removed %d objects and pins %v, want 4 and [app:v1]", removed, r.RemovedPins)
	}
	r, err = Dir(context.Background(), f.dir, Options{})
	if err != nil || !r.OK() || len(r.Objects) != 0 {
		t.Fatalf("after the repair: %v %+v", err, r)
	}
	s, err := store.Open(f.dir, store.WithChunkSize(chunkSize))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Stat(f.blob); err == nil {
		t.Error("the damaged blob is still committed")
	}
	if _, ok := s.Pins().Get("app:v1"); ok || s.Pins().Pinned(f.blob) {
		t.Error("the pin of removed content is still recorded")
	}
	man := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	if err := s.PutManifest(f.manifest, "application/vnd.oci.image.manifest.v1+json", man); err != nil {
		t.Fatalf("committing the removed manifest again: %v", err)
	}
	if m, err := s.ChunkMap(context.Background(), f.manifest, chunkSize); err != nil || m.Size != int64(len(man)) {
		t.Errorf("the manifest's map after the repair: %v %+v", err, m)
	}
}

// TestRefusesRunningNode: a check never reads a directory a node has open, and a node cannot
// start while a check reads it.
func TestRefusesRunningNode(t *testing.T) {
	f := newFixture(t)
	s, err := store.Open(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, repair := range []bool{false, true} {
		if _, err := Dir(context.Background(), f.dir, Options{Repair: repair}); !errors.Is(err, ErrInUse) {
			t.Errorf("repair=%v on an open store: %v, want ErrInUse", repair, err)
		}
	}
	s.Close()
	if _, err := Dir(context.Background(), t.TempDir(), Options{}); err == nil {
		t.Error("an empty directory verified")
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func withDB(t *testing.T, dir string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, layout.MetaFile), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}
