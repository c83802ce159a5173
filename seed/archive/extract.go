package archive

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// maxEntries bounds the entries of an archive: a layout of a few images has tens, a docker-archive
// of many images a few thousand.
const maxEntries = 100_000

// sniff tells which format the file at src holds, by content: a directory with oci-layout or
// index.json is an OCI layout; a tar with those is an oci-archive, a tar with only manifest.json a
// docker-archive. Docker 25 and later write both into `docker save` output; the OCI side wins,
// since it carries the original manifests and so the original digests.
//
// For a tar, sniff also checks every entry (see checkEntry) and that the tar is whole, so a
// hostile or damaged archive is refused before anything is extracted or pushed.
func sniff(src string) (string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		for _, f := range []string{"oci-layout", "index.json"} {
			if _, err := os.Stat(filepath.Join(src, f)); err == nil {
				return FormatOCI, nil
			}
		}
		return "", fmt.Errorf("%s: a directory without oci-layout or index.json is not an OCI layout: %w", src, errdefs.ErrInvalid)
	}
	f, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var magic [2]byte
	if _, err := io.ReadFull(f, magic[:]); err == nil && magic == [2]byte{0x1f, 0x8b} {
		return "", fmt.Errorf("%s is gzip-compressed; decompress it first (gunzip): %w", src, errdefs.ErrInvalid)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	var oci, docker bool
	// tar.Reader seeks over file contents, so this reads headers only.
	tr := tar.NewReader(f)
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("%s: not a whole tar archive: %v: %w", src, err, errdefs.ErrInvalid)
		}
		if n >= maxEntries {
			return "", fmt.Errorf("%s: more than %d entries: %w", src, maxEntries, errdefs.ErrTooLarge)
		}
		name, err := checkEntry(hdr, fi.Size())
		if err != nil {
			return "", fmt.Errorf("%s: %w", src, err)
		}
		switch name {
		case "oci-layout", "index.json":
			oci = true
		case "manifest.json":
			docker = true
		}
	}
	switch {
	case oci:
		return FormatOCIArchive, nil
	case docker:
		return FormatDockerArchive, nil
	}
	return "", fmt.Errorf("%s: neither an OCI layout (index.json) nor a docker-archive (manifest.json): %w", src, errdefs.ErrInvalid)
}

// checkEntry returns the cleaned name of a tar entry, or an error if the entry could escape the
// directory it is extracted to (absolute, .. components) or claims more bytes than the whole
// archive holds (archiveSize). Links are checked at extraction; a docker-archive may use them.
func checkEntry(hdr *tar.Header, archiveSize int64) (string, error) {
	raw := hdr.Name
	if raw == "" || strings.HasPrefix(raw, "/") || strings.Contains(raw, "\\") || strings.ContainsRune(raw, 0) {
		return "", fmt.Errorf("entry %q: not a relative path: %w", raw, errdefs.ErrInvalid)
	}
	for _, part := range strings.Split(raw, "/") {
		if part == ".." {
			return "", fmt.Errorf("entry %q: path leaves the archive: %w", raw, errdefs.ErrInvalid)
		}
	}
	if hdr.Size < 0 || hdr.Size > archiveSize {
		return "", fmt.Errorf("entry %q claims %d bytes, more than the %d-byte archive: %w", raw, hdr.Size, archiveSize, errdefs.ErrTooLarge)
	}
	return path.Clean(raw), nil
}

// extract unpacks the oci-archive src into dir, an empty directory. Only directories and regular
// files are accepted: an OCI layout needs nothing else, and a link is the classic way out of dir.
// Writes go through os.Root, which also refuses to follow anything out of dir.
func extract(src, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: not a whole tar archive: %v: %w", src, err, errdefs.ErrInvalid)
		}
		name, err := checkEntry(hdr, fi.Size())
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		if name == "." {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("%s: entry %q: %w", src, hdr.Name, err)
			}
		case tar.TypeReg:
			if err := extractFile(root, name, tr, hdr.Size); err != nil {
				return fmt.Errorf("%s: entry %q: %w", src, hdr.Name, err)
			}
		case tar.TypeSymlink, tar.TypeLink:
			return fmt.Errorf("%s: entry %q is a link (to %q); an oci-archive holds only files and directories: %w",
				src, hdr.Name, hdr.Linkname, errdefs.ErrInvalid)
		default:
			return fmt.Errorf("%s: entry %q has tar type %q; an oci-archive holds only files and directories: %w",
				src, hdr.Name, hdr.Typeflag, errdefs.ErrInvalid)
		}
	}
}

func extractFile(root *os.Root, name string, r io.Reader, size int64) error {
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	// O_EXCL: an archive that names a file twice is not one a layout writer produced.
	out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("named twice in the archive: %w", errdefs.ErrInvalid)
	}
	if err != nil {
		return err
	}
	n, err := io.Copy(out, r)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("%d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	return err
}
