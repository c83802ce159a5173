package archive

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
)

// Export pulls ref (host:port/repo:tag or host:port/repo@digest) and writes it to dst in format
// (FormatOCI, FormatOCIArchive or FormatDockerArchive). An index keeps all its platforms, except in
// a docker-archive, which holds one image: there Options.Platform picks it, and an index without a
// platform is an error.
//
// In an OCI layout the entry is annotated org.opencontainers.image.ref.name=repo:tag (repo@digest
// for a digest ref); a docker-archive's RepoTags is repo:tag. The registry host is left out either
// way, so Import puts the image under the same name in whichever registry it is given.
//
// dst appears whole or not at all: everything is written under a temporary name beside dst and
// renamed into place at the end, and removed on failure. An existing dst is an error wrapping
// fs.ErrExist unless Options.Overwrite is set.
func Export(ctx context.Context, ref, dst, format string, opts Options) error {
	switch format {
	case FormatOCI, FormatOCIArchive, FormatDockerArchive:
	default:
		return fmt.Errorf("format %q: want %s, %s or %s: %w", format, FormatOCI, FormatOCIArchive, FormatDockerArchive, errdefs.ErrInvalid)
	}
	r, err := opts.reference(ref)
	if err != nil {
		return err
	}
	if opts.Namespace != "" && !names.ValidRegistryHost(opts.Namespace) {
		return fmt.Errorf("namespace %q: want a registry host[:port]: %w", opts.Namespace, errdefs.ErrInvalid)
	}
	if !opts.Overwrite {
		if _, err := os.Lstat(dst); err == nil {
			return fmt.Errorf("%s: %w (overwrite it with --force)", dst, fs.ErrExist)
		}
	}
	ropts, closeConns := opts.remoteOptions(ctx)
	defer closeConns()
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	refName := refString(r)
	// Write the result under a temporary name in dst's directory, so the final rename stays on
	// one file system and is atomic.
	tmp, err := os.MkdirTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".shoal-tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var result string
	switch format {
	case FormatOCI:
		result = filepath.Join(tmp, "layout")
		err = writeLayout(result, desc, refName)
	case FormatOCIArchive:
		dir := filepath.Join(tmp, "layout")
		result = filepath.Join(tmp, "archive.tar")
		if err = writeLayout(dir, desc, refName); err == nil {
			err = tarDir(ctx, dir, result)
		}
	case FormatDockerArchive:
		result = filepath.Join(tmp, "archive.tar")
		err = writeDockerArchive(r, desc, result, opts.Platform, ropts)
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", ref, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := syncTree(result); err != nil {
		return err
	}
	return replace(result, dst, opts.Overwrite)
}

// reference parses a full reference host:port/repo:tag or host:port/repo@digest; the host must be
// given (there is no default registry here) and decides plain HTTP like Options.registry.
func (o Options) reference(ref string) (name.Reference, error) {
	host, _, ok := strings.Cut(ref, "/")
	if !ok {
		return nil, fmt.Errorf("reference %q: want host:port/repo:tag or host:port/repo@digest: %w", ref, errdefs.ErrInvalid)
	}
	if _, err := o.registry(host); err != nil {
		return nil, err
	}
	nopts := []name.Option{name.StrictValidation}
	if o.plainHTTP(host) {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, fmt.Errorf("reference %q: %v: %w", ref, err, errdefs.ErrInvalid)
	}
	return r, nil
}

// writeLayout writes desc (an image or an index with all its children) as the one entry of a new
// OCI layout at dir, named refName.
func writeLayout(dir string, desc *remote.Descriptor, refName string) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	ann := layout.WithAnnotations(map[string]string{annotationRefName: refName})
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		return p.AppendIndex(idx, ann)
	}
	img, err := desc.Image()
	if err != nil {
		return err
	}
	return p.AppendImage(img, ann)
}

// writeDockerArchive writes the image at r, or its image for platform when r is an index, as a
// docker-archive at path.
func writeDockerArchive(r name.Reference, desc *remote.Descriptor, path string, platform *v1.Platform, ropts []remote.Option) error {
	var img v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		var have []string
		for _, m := range im.Manifests {
			if m.Platform != nil {
				have = append(have, m.Platform.String())
			}
		}
		if platform == nil {
			return fmt.Errorf("a multi-platform index (%s), and a docker-archive holds one image: pick one with --platform: %w",
				strings.Join(have, ", "), errdefs.ErrInvalid)
		}
		for _, m := range im.Manifests {
			if m.Platform != nil && m.MediaType.IsImage() && m.Platform.Satisfies(*platform) {
				if img, err = idx.Image(m.Digest); err != nil {
					return err
				}
				break
			}
		}
		if img == nil {
			return fmt.Errorf("no image for platform %s in the index (%s): %w", platform, strings.Join(have, ", "), errdefs.ErrNotFound)
		}
	} else {
		var err error
		if img, err = desc.Image(); err != nil {
			return err
		}
		if platform != nil {
			// A platform that does not match is a mistake worth hearing about, not one to ignore.
			cfg, err := img.ConfigFile()
			if err != nil {
				return err
			}
			if p := cfg.Platform(); p == nil || !p.Satisfies(*platform) {
				return fmt.Errorf("the image is for %v, not %s: %w", cfg.Platform(), platform, errdefs.ErrNotFound)
			}
		}
	}
	// RepoTags without the registry host, so `docker load` and Import name it repo:tag.
	var tagged name.Reference = r
	if t, ok := r.(name.Tag); ok {
		nt, err := name.NewTag(refString(t), name.WeakValidation)
		if err != nil {
			return err
		}
		tagged = nt
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = tarball.MultiRefWrite(map[name.Reference]v1.Image{tagged: img}, w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// tarDir writes the files under dir, in name order and with fixed owners and times, as the tar at
// path: the same layout gives the same archive bytes.
func tarDir(ctx context.Context, dir, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, Format: tar.FormatPAX})
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Size: fi.Size(), Mode: 0o644, Format: tar.FormatPAX}); err != nil {
				return err
			}
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			_, err = io.Copy(tw, in)
			return err
		}
		return fmt.Errorf("%s: not a regular file", p)
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Close()
	}
	return err
}

// syncTree flushes the file at p, or every file under the directory p, to disk, so the rename that
// publishes it cannot land before its contents.
func syncTree(p string) error {
	return filepath.WalkDir(p, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return syncPath(p)
	})
}

// replace moves src to dst. Without overwrite it never replaces anything: a file is linked into
// place (link fails on an existing name, unlike rename) and a directory renamed only after dst is
// seen missing. With overwrite an existing dst is moved aside first and removed once src is in.
func replace(src, dst string, overwrite bool) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if overwrite {
		if _, err := os.Lstat(dst); err == nil {
			aside := src + ".old"
			if err := os.Rename(dst, aside); err != nil {
				return err
			}
			if err := os.Rename(src, dst); err != nil {
				_ = os.Rename(aside, dst)
				return err
			}
			return errors.Join(os.RemoveAll(aside), syncPath(filepath.Dir(dst)))
		}
	}
	if fi.IsDir() {
		if _, err := os.Lstat(dst); err == nil {
			return fmt.Errorf("%s: %w (overwrite it with --force)", dst, fs.ErrExist)
		}
		if err := os.Rename(src, dst); err != nil {
			return err
		}
	} else if err := os.Link(src, dst); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w (overwrite it with --force)", dst, fs.ErrExist)
		}
		// No hard links here (a FAT-formatted stick, say): check, then rename.
		if _, serr := os.Lstat(dst); serr == nil {
			return fmt.Errorf("%s: %w (overwrite it with --force)", dst, fs.ErrExist)
		}
		if err := os.Rename(src, dst); err != nil {
			return err
		}
	}
	return syncPath(filepath.Dir(dst))
}

// syncPath fsyncs the file or directory at p.
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
