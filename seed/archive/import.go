package archive

import (
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
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/internal/oci"
)

// Annotations that name an entry of an OCI layout's index.json. containerd's export puts the full
// name in its own annotation and only the tag in the OCI one; skopeo and Shoal use the OCI one,
// with a tag (skopeo) or repo:tag (Shoal).
const (
	annotationRefName       = "org.opencontainers.image.ref.name"
	annotationContainerdRef = "io.containerd.image.name"
)

// Imported is one image or index pushed by Import.
type Imported struct {
	Repository string // repository in the destination registry
	Tag        string // empty when pushed by digest only
	Digest     v1.Hash
	MediaType  types.MediaType
}

// String is repo:tag@digest, or repo@digest for an image pushed by digest.
func (i Imported) String() string {
	if i.Tag == "" {
		return i.Repository + "@" + i.Digest.String()
	}
	return i.Repository + ":" + i.Tag + "@" + i.Digest.String()
}

// Import pushes every image and index in src to the registry at host registry (host:port) and
// returns what it pushed, in the order of the file.
//
// src is an OCI image layout directory, an oci-archive or a docker-archive, told apart by content,
// not by file name. An entry of an OCI layout is named by its io.containerd.image.name or
// org.opencontainers.image.ref.name annotation: a reference (repo:tag, host/repo:tag,
// repo@digest) names the repository and tag; a bare tag takes the repository from
// Options.Repository. A docker-archive entry is named by its RepoTags. The registry host of a name
// is dropped (the destination is the registry) and Docker Hub names keep their library/ prefix,
// so alpine:3.19 goes to library/alpine:3.19. Options.Repository, when set, replaces every
// repository; an entry without a name is pushed by digest into it, and is an error without it.
//
// Manifests are pushed byte for byte, so digests are preserved; for a docker-archive, which has no
// manifests, go-containerregistry computes them. Every name is resolved and every manifest checked
// against its digest before the first push; blobs are checked while they stream, and an image
// with a bad blob is not pushed (images before it in the file already are: the error says which).
func Import(ctx context.Context, src, registry string, opts Options) ([]Imported, error) {
	reg, err := opts.registry(registry)
	if err != nil {
		return nil, err
	}
	if opts.Repository != "" && !names.ValidRepository(opts.Repository) {
		return nil, fmt.Errorf("repository %q: %w", opts.Repository, errdefs.ErrInvalid)
	}
	format, err := sniff(src)
	if err != nil {
		return nil, err
	}
	var entries []entry
	switch format {
	case FormatOCI:
		entries, err = layoutEntries(src, reg, opts.Repository)
	case FormatOCIArchive:
		dir, derr := os.MkdirTemp(opts.tempDir(), "shoal-import-*")
		if derr != nil {
			return nil, derr
		}
		defer os.RemoveAll(dir)
		if err = extract(src, dir); err == nil {
			entries, err = layoutEntries(dir, reg, opts.Repository)
		}
	case FormatDockerArchive:
		entries, err = dockerEntries(src, reg, opts.Repository)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	ropts, closeConns := opts.remoteOptions(ctx)
	defer closeConns()
	var done []Imported
	for _, e := range entries {
		if err := push(ctx, e.ref, e.t, ropts, opts.Progress); err != nil {
			return done, fmt.Errorf("import %s (%d of %d): %w", e.ref, len(done)+1, len(entries), err)
		}
		done = append(done, e.imported())
	}
	return done, nil
}

func (o Options) tempDir() string {
	if o.TempDir != "" {
		return o.TempDir
	}
	return os.TempDir()
}

// entry is one push of an Import: an image or index and the reference it goes to.
type entry struct {
	ref    name.Reference
	t      remote.Taggable
	digest v1.Hash
	mt     types.MediaType
}

func (e entry) imported() Imported {
	i := Imported{Repository: e.ref.Context().RepositoryStr(), Digest: e.digest, MediaType: e.mt}
	if t, ok := e.ref.(name.Tag); ok {
		i.Tag = t.TagStr()
	}
	return i
}

// layoutEntries resolves the names of every entry of the OCI layout at dir and checks their
// manifests against their digests.
func layoutEntries(dir string, reg name.Registry, repo string) ([]entry, error) {
	fi, err := os.Stat(filepath.Join(dir, "index.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("OCI layout without index.json: %w", fs.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	if fi.Size() > oci.MaxManifestSize {
		return nil, fmt.Errorf("index.json: %d bytes: %w", fi.Size(), errdefs.ErrTooLarge)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	if len(im.Manifests) == 0 {
		return nil, fmt.Errorf("OCI layout holds no images: %w", errdefs.ErrNotFound)
	}
	var out []entry
	for _, d := range im.Manifests {
		var t remote.Taggable
		switch {
		case d.MediaType.IsIndex():
			t, err = idx.ImageIndex(d.Digest)
		case d.MediaType.IsImage():
			t, err = idx.Image(d.Digest)
		default:
			return nil, fmt.Errorf("index.json entry %s has media type %q, neither an image nor an index: %w", d.Digest, d.MediaType, errdefs.ErrUnsupported)
		}
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
		if err := verifyManifests(t, d); err != nil {
			return nil, err
		}
		n := d.Annotations[annotationContainerdRef]
		if n == "" {
			n = d.Annotations[annotationRefName]
		}
		ref, err := destination(reg, n, d.Digest, repo)
		if err != nil {
			return nil, err
		}
		out = append(out, entry{ref: ref, t: t, digest: d.Digest, mt: d.MediaType})
	}
	return out, nil
}

// dockerEntries resolves the RepoTags of every image of the docker-archive at src. The archive is
// read in place: go-containerregistry looks entries up by name inside the tar and never writes
// them out, so its names cannot escape anywhere.
func dockerEntries(src string, reg name.Registry, repo string) ([]entry, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(src) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("docker-archive holds no images: %w", errdefs.ErrNotFound)
	}
	var out []entry
	for i, d := range m {
		var tag *name.Tag
		if len(d.RepoTags) > 0 {
			t, err := name.NewTag(d.RepoTags[0], name.WeakValidation)
			if err != nil {
				return nil, fmt.Errorf("image %d: RepoTag %q: %v: %w", i, d.RepoTags[0], err, errdefs.ErrInvalid)
			}
			tag = &t
		} else if len(m) > 1 {
			// go-containerregistry finds an image of a docker-archive by tag, or takes the only one.
			return nil, fmt.Errorf("image %d of %d has no RepoTags; only a single-image docker-archive may be untagged: %w", i+1, len(m), errdefs.ErrUnsupported)
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
		dg, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
		mt, err := img.MediaType()
		if err != nil {
			return nil, err
		}
		tags := d.RepoTags
		if len(tags) == 0 {
			tags = []string{""}
		}
		for _, n := range tags {
			ref, err := destination(reg, n, dg, repo)
			if err != nil {
				return nil, err
			}
			out = append(out, entry{ref: ref, t: img, digest: dg, mt: mt})
		}
	}
	return out, nil
}

// destination is where an entry named n (a reference, a bare tag or nothing) with digest dg goes
// in registry reg; repo, when set, replaces the repository of n.
func destination(reg name.Registry, n string, dg v1.Hash, repo string) (name.Reference, error) {
	switch {
	case n == "" && repo == "":
		return nil, fmt.Errorf("image %s has no name (no %s annotation or RepoTags); give a repository (--repo) to push it by digest: %w",
			dg, annotationRefName, errdefs.ErrInvalid)
	case n == "":
		return reg.Repo(repo).Digest(dg.String()), nil
	case !strings.ContainsAny(n, ":/@"):
		// A bare word is a tag, as skopeo writes it; "alpine" alone is not taken for a repository.
		if !names.ValidTag(n) {
			return nil, fmt.Errorf("image %s is named %q, neither a reference nor a tag: %w", dg, n, errdefs.ErrInvalid)
		}
		if repo == "" {
			return nil, fmt.Errorf("image %s is named by tag %q only; give a repository (--repo): %w", dg, n, errdefs.ErrInvalid)
		}
		return reg.Repo(repo).Tag(n), nil
	}
	parsed, err := name.ParseReference(n, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("image %s is named %q: %v: %w", dg, n, err, errdefs.ErrInvalid)
	}
	r := parsed.Context().RepositoryStr()
	if repo != "" {
		r = repo
	}
	if !names.ValidRepository(r) {
		return nil, fmt.Errorf("image %s is named %q: repository %q: %w", dg, n, r, errdefs.ErrInvalid)
	}
	switch p := parsed.(type) {
	case name.Digest:
		if p.DigestStr() != dg.String() {
			return nil, fmt.Errorf("image %s is named %q, another digest: %w", dg, n, errdefs.ErrDigestMismatch)
		}
		return reg.Repo(r).Digest(dg.String()), nil
	case name.Tag:
		return reg.Repo(r).Tag(p.TagStr()), nil
	}
	return nil, fmt.Errorf("image %s is named %q: %w", dg, n, errdefs.ErrInvalid)
}

// refString is ref without its registry: repo:tag or repo@digest.
func refString(ref name.Reference) string {
	sep := ":"
	if _, ok := ref.(name.Digest); ok {
		sep = "@"
	}
	return ref.Context().RepositoryStr() + sep + ref.Identifier()
}
