// Package verify checks a node's data directory while the node is stopped: every committed
// object against its digest, the chunk map recorded with it against its content, and every
// partial file against the map recorded for its resume. `shoal store verify` runs it.
//
// It reads the directory by its layout (agent/store/layout: layout.BlobsDir, layout.MetaFile, ...)
// rather than through a store.Store, because opening a Store changes the directory (it clears
// tmp/ and drops partials without a record), which would hide what a check is asked to show.
// The metadata database's file lock keeps a running node and a check apart: a check takes it
// shared (read-only) or, to repair, exclusively, and fails at once while a node holds it.
package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/shoal-oci/shoal/agent/store/layout"
	"github.com/shoal-oci/shoal/internal/chunks"
)

// ErrInUse is returned when a node (or another check) holds the data directory.
var ErrInUse = errors.New("the data directory is in use by a running node: stop it first")

// partialMaxAge mirrors the store's rule: a partial file untouched this long is removed at start.
const partialMaxAge = 7 * 24 * time.Hour

// Object is the verdict on one file under blobs/.
type Object struct {
	// Digest names the content; empty for a file whose name is not a digest.
	Digest digest.Digest `json:"digest,omitempty"`
	Path   string        `json:"path"`
	Size   int64         `json:"size"`
	// MediaType is the media type recorded for a manifest.
	MediaType string `json:"mediaType,omitempty"`
	// Map is "ok" (the recorded chunk map matches the content), "none" (none recorded: one is
	// computed when a peer first asks), or what is wrong with it.
	Map string `json:"map,omitempty"`
	// OK is false when the content or its records are wrong; Problem says how.
	OK      bool   `json:"ok"`
	Problem string `json:"problem,omitempty"`
	// Pins are the keys of the pins that keep this content.
	Pins []string `json:"pins,omitempty"`
	// Removed is set when a repair removed the object (and its records).
	Removed bool `json:"removed,omitempty"`
}

// Outcomes of a partial file at the node's next start and fetch of its digest.
const (
	// Resume: the next fetch keeps the Verified chunks and fetches the rest.
	Resume = "resume"
	// Restart: the record cannot be used (unreadable, or in another chunk size than the
	// node's); the next fetch starts from zero over the file.
	Restart = "restart"
	// Drop: no record, a record naming no file, or untouched for a week; the next start
	// removes it.
	Drop = "drop"
)

// Partial is what a resume of one partial file would keep.
type Partial struct {
	Digest digest.Digest `json:"digest,omitempty"`
	Path   string        `json:"path,omitempty"`
	// Size is the blob's size as its record says (the file's size when there is no record).
	Size      int64 `json:"size"`
	ChunkSize int64 `json:"chunkSize,omitempty"`
	// Chunks is the blob's number of chunks; Covered those the recorded map can verify, from
	// the first, as a resume reads them; Verified those of them whose bytes verify (what a
	// resume holds again).
	Chunks   int    `json:"chunks,omitempty"`
	Covered  int    `json:"covered"`
	Verified int    `json:"verified"`
	Outcome  string `json:"outcome"`
	Note     string `json:"note,omitempty"`
}

// Report is the result of a check.
type Report struct {
	Dir      string    `json:"dir"`
	Objects  []Object  `json:"objects"`
	Partials []Partial `json:"partials"`
	// Notes are harmless leftovers the next start or commit takes care of (records naming no
	// content, files in tmp/).
	Notes []string `json:"notes,omitempty"`
	// Bad counts the objects that are not OK.
	Bad int `json:"bad"`
	// RemovedPins are the pins a repair removed because they kept removed content.
	RemovedPins []string `json:"removedPins,omitempty"`
}

// OK reports whether every committed object verified.
func (r *Report) OK() bool { return r.Bad == 0 }

// Options configures a check.
type Options struct {
	// Repair removes every object that is not OK, with its records and the pins that keep it,
	// so that the next pull fetches it again. It takes the data directory exclusively.
	Repair bool
	// OnObject and OnPartial, when set, are called with each verdict as it is reached (a large
	// store takes a while: one read of every byte).
	OnObject  func(Object)
	OnPartial func(Partial)
}

// Dir checks the data directory dir. It fails with ErrInUse while a node has dir open; an error
// means the check could not be made, a Report that is not OK that it found wrong content.
func Dir(ctx context.Context, dir string, opts Options) (*Report, error) {
	meta := filepath.Join(dir, layout.MetaFile)
	if _, err := os.Stat(meta); err != nil {
		return nil, fmt.Errorf("%s is not a data directory: %w", dir, err)
	}
	db, err := bolt.Open(meta, 0o644, &bolt.Options{ReadOnly: !opts.Repair, Timeout: time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("%s: %w", dir, ErrInUse)
		}
		return nil, fmt.Errorf("opening %s: %w", meta, err)
	}
	defer db.Close()
	c := &checker{dir: dir, db: db, opts: opts, rep: &Report{Dir: dir}}
	if err := c.loadRecords(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", meta, err)
	}
	if err := c.objects(ctx); err != nil {
		return nil, err
	}
	if err := c.partials(ctx); err != nil {
		return nil, err
	}
	c.leftovers()
	if opts.Repair {
		if err := c.repair(); err != nil {
			return c.rep, err
		}
	}
	return c.rep, nil
}

type checker struct {
	dir  string
	db   *bolt.DB
	opts Options
	rep  *Report

	media   map[digest.Digest]string
	maps    map[digest.Digest][]byte
	partial map[digest.Digest][]byte
	pins    map[digest.Digest][]string // digest -> keys of the pins keeping it
	seen    map[digest.Digest]bool     // committed content found
	bad     []Object
}

func (c *checker) loadRecords() error {
	c.media, c.maps, c.partial = map[digest.Digest]string{}, map[digest.Digest][]byte{}, map[digest.Digest][]byte{}
	c.pins, c.seen = map[digest.Digest][]string{}, map[digest.Digest]bool{}
	return c.db.View(func(tx *bolt.Tx) error {
		each := func(bucket string, fn func(k, v []byte)) error {
			bk := tx.Bucket([]byte(bucket))
			if bk == nil {
				return nil
			}
			return bk.ForEach(func(k, v []byte) error { fn(k, v); return nil })
		}
		if err := each(layout.MediaBucket, func(k, v []byte) { c.media[digest.Digest(k)] = string(v) }); err != nil {
			return err
		}
		if err := each(layout.MapsBucket, func(k, v []byte) { c.maps[digest.Digest(k)] = slices.Clone(v) }); err != nil {
			return err
		}
		if err := each(layout.PartialBucket, func(k, v []byte) { c.partial[digest.Digest(k)] = slices.Clone(v) }); err != nil {
			return err
		}
		return each(layout.PinsBucket, func(k, v []byte) {
			var rec struct {
				Digests []digest.Digest `json:"digests"`
			}
			if json.Unmarshal(v, &rec) != nil {
				return
			}
			for _, d := range rec.Digests {
				c.pins[d] = append(c.pins[d], string(k))
			}
		})
	})
}

// objects checks every file under blobs/.
func (c *checker) objects(ctx context.Context) error {
	root := filepath.Join(c.dir, layout.BlobsDir)
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == root {
				return nil
			}
			return err
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if de.IsDir() {
			if p != root && filepath.Dir(p) != root {
				// Nothing the store writes nests this deep.
				c.add(Object{Path: p, Problem: "unexpected directory"})
				return filepath.SkipDir
			}
			return nil
		}
		if filepath.Dir(p) == root {
			c.add(Object{Path: p, Problem: "not a committed object's place"})
			return nil
		}
		if !de.Type().IsRegular() {
			// The store writes regular files only; a link could name anything.
			c.add(Object{Path: p, Problem: "not a regular file"})
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(filepath.Base(filepath.Dir(p))), de.Name())
		if d.Validate() != nil {
			c.add(Object{Path: p, Problem: "name is not a digest"})
			return nil
		}
		c.seen[d] = true
		c.add(c.object(ctx, d, p))
		return nil
	})
	if err != nil {
		return fmt.Errorf("walking %s: %w", root, err)
	}
	return nil
}

// object hashes one committed file, with the chunk map recorded for it when there is one.
func (c *checker) object(ctx context.Context, d digest.Digest, p string) Object {
	o := Object{Digest: d, Path: p, MediaType: c.media[d], Map: "none", OK: true, Pins: c.pins[d]}
	f, err := os.Open(p)
	if err != nil {
		o.OK, o.Problem = false, "cannot be read: "+err.Error()
		return o
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		o.Size = fi.Size()
	}
	var recorded *chunks.Map
	if raw, ok := c.maps[d]; ok {
		var m chunks.Map
		switch err := m.UnmarshalBinary(raw); {
		case err != nil:
			o.Map = "unreadable: " + err.Error()
		case m.Digest != d:
			o.Map = "names " + string(m.Digest)
		default:
			recorded = &m
		}
	}
	if chunks.ValidChunkSize(d.Algorithm(), chunks.DefaultSize) != nil ||
		recorded == nil && chunks.Count(o.Size, chunks.DefaultSize) > chunks.MaxChunks {
		// No chunk maps for this algorithm, or none recorded for a blob too large for one: the
		// digest alone.
		v := d.Verifier()
		if _, err := io.Copy(v, readerCtx{ctx, f}); err != nil {
			o.OK, o.Problem = false, "cannot be read: "+err.Error()
		} else if !v.Verified() {
			o.OK, o.Problem = false, "content does not hash to its digest"
		}
		return o
	}
	cs := int64(chunks.DefaultSize)
	if recorded != nil {
		cs = recorded.ChunkSize
	}
	got, err := chunks.Read(ctx, f, d.Algorithm(), cs)
	if err != nil {
		o.OK, o.Problem = false, "cannot be read: "+err.Error()
		return o
	}
	if got.Digest != d {
		o.OK, o.Problem = false, "content hashes to "+string(got.Digest)
	}
	switch {
	case recorded != nil && recorded.Equal(got):
		o.Map = "ok"
	case recorded != nil:
		o.Map = "disagrees with the content"
	}
	if o.Map != "ok" && o.Map != "none" {
		// A wrong map is served to peers, who would blame this node for its own good chunks.
		o.OK = false
		if o.Problem == "" {
			o.Problem = "recorded chunk map " + o.Map
		}
	}
	return o
}

func (c *checker) add(o Object) {
	if o.Problem != "" {
		o.OK = false
	}
	if !o.OK {
		c.rep.Bad++
		c.bad = append(c.bad, o)
	}
	c.rep.Objects = append(c.rep.Objects, o)
	if c.opts.OnObject != nil {
		c.opts.OnObject(o)
	}
}

// partials checks every partial file and record as the next start and fetch would use them.
func (c *checker) partials(ctx context.Context) error {
	root := filepath.Join(c.dir, layout.PartialDir)
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", root, err)
	}
	files := map[string]fs.DirEntry{}
	for _, e := range entries {
		files[e.Name()] = e
	}
	keys := make([]digest.Digest, 0, len(c.partial))
	for d := range c.partial {
		keys = append(keys, d)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, d := range keys {
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.Validate() != nil {
			c.addPartial(Partial{Digest: d, Outcome: Drop, Note: "record names no valid digest"})
			continue
		}
		p := layout.PartialPath(c.dir, d)
		delete(files, filepath.Base(p))
		c.addPartial(c.partialFile(d, p, c.partial[d]))
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pt := Partial{Path: filepath.Join(root, n), Outcome: Drop, Note: "no record"}
		if info, err := files[n].Info(); err == nil {
			pt.Size = info.Size()
		}
		c.addPartial(pt)
	}
	return nil
}

func (c *checker) partialFile(d digest.Digest, p string, raw []byte) Partial {
	pt := Partial{Digest: d, Path: p, Outcome: Resume}
	info, err := os.Stat(p)
	switch {
	case err != nil:
		pt.Outcome, pt.Note, pt.Path = Drop, "record without a file", ""
		return pt
	case time.Since(info.ModTime()) > partialMaxAge:
		pt.Outcome, pt.Note = Drop, "untouched for more than a week"
		return pt
	}
	pt.Size = info.Size()
	var m chunks.Map
	if err := m.UnmarshalBinary(raw); err != nil || m.Digest != d {
		pt.Outcome, pt.Note = Restart, "record unreadable"
		return pt
	}
	pt.Size, pt.ChunkSize, pt.Chunks = m.Size, m.ChunkSize, chunks.Count(m.Size, m.ChunkSize)
	f, err := os.Open(p)
	if err != nil {
		pt.Outcome, pt.Note = Restart, "file unreadable: "+err.Error()
		return pt
	}
	defer f.Close()
	// As store.ResumeWriter reads it: chunks in order while the map covers them, each held
	// again only if its bytes verify.
	buf := make([]byte, m.ChunkSize)
	for i := range pt.Chunks {
		if !m.Covers(i) {
			break
		}
		pt.Covered++
		off, n := m.Range(i)
		if k, err := f.ReadAt(buf[:n], off); int64(k) != n || (err != nil && k == 0) {
			continue
		}
		if m.Verify(i, buf[:n]) == nil {
			pt.Verified++
		}
	}
	if m.ChunkSize != chunks.DefaultSize {
		pt.Note = fmt.Sprintf("resumed by a node whose --chunk-size is %d bytes, restarted by others", m.ChunkSize)
	}
	return pt
}

func (c *checker) addPartial(p Partial) {
	c.rep.Partials = append(c.rep.Partials, p)
	if c.opts.OnPartial != nil {
		c.opts.OnPartial(p)
	}
}

// leftovers notes records naming no content and files in tmp/: harmless (a crash between a
// commit's record and its rename leaves such a record; the next start clears tmp/).
func (c *checker) leftovers() {
	var orphans int
	for d := range c.media {
		if !c.seen[d] {
			orphans++
		}
	}
	for d := range c.maps {
		if !c.seen[d] {
			orphans++
		}
	}
	if orphans > 0 {
		c.rep.Notes = append(c.rep.Notes, fmt.Sprintf("%d media type or chunk map records name no committed content (harmless; a crash mid-commit leaves them)", orphans))
	}
	if entries, err := os.ReadDir(filepath.Join(c.dir, layout.TmpDir)); err == nil && len(entries) > 0 {
		c.rep.Notes = append(c.rep.Notes, fmt.Sprintf("%d files in %s/ (content being written when the node stopped; cleared at the next start)", len(entries), layout.TmpDir))
	}
}

// repair removes what is not OK: the file, its media type and chunk map records, and the pins
// that keep it (a pin promises its content is held; replica repair then finds the count short
// and another seed, or this one on the next preheat, fetches it again).
func (c *checker) repair() error {
	if len(c.bad) == 0 {
		return nil
	}
	removedPins := map[string]bool{}
	err := c.db.Update(func(tx *bolt.Tx) error {
		for _, o := range c.bad {
			if o.Digest == "" {
				continue
			}
			for _, b := range []string{layout.MediaBucket, layout.MapsBucket} {
				if bk := tx.Bucket([]byte(b)); bk != nil {
					if err := bk.Delete([]byte(o.Digest)); err != nil {
						return err
					}
				}
			}
			for _, k := range o.Pins {
				if bk := tx.Bucket([]byte(layout.PinsBucket)); bk != nil && !removedPins[k] {
					if err := bk.Delete([]byte(k)); err != nil {
						return err
					}
					removedPins[k] = true
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("repair: removing records: %w", err)
	}
	// Records first, then files: a crash in between leaves bad files without records, which
	// the next check finds again.
	var errs []error
	for i, o := range c.rep.Objects {
		if o.OK {
			continue
		}
		if err := os.RemoveAll(o.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("repair: %w", err))
			continue
		}
		c.rep.Objects[i].Removed = true
	}
	for k := range removedPins {
		c.rep.RemovedPins = append(c.rep.RemovedPins, k)
	}
	sort.Strings(c.rep.RemovedPins)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// readerCtx ends a read between buffers when ctx ends.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
