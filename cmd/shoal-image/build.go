package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// DefaultRepository is where the project publishes the image; the Helm chart defaults to it.
	DefaultRepository = "ghcr.io/shoal-oci/shoal"
	// DefaultSource is the org.opencontainers.image.source label.
	DefaultSource = "https://github.com/shoal-oci/shoal"
	// shoalPackage is the program put in the image.
	shoalPackage = "github.com/shoal-oci/shoal/cmd/shoal"
	// BinaryPath is where the image holds shoal; it is the entrypoint.
	BinaryPath = "/usr/local/bin/shoal"
	// UID and GID of the image's user, "nonroot" (as in distroless images).
	UID = 65532
	GID = 65532
)

// Config says what to build. Empty fields are taken from the git checkout the command runs in.
type Config struct {
	Version   string // stamped into the binary (main.buildVersion) and the labels; also the layout's tag
	Revision  string // the commit, for the org.opencontainers.image.revision label
	Epoch     *int64 // Unix time of every file and record; nil: the commit time
	Source    string // org.opencontainers.image.source
	Platforms string // comma-separated OS/ARCH
	Dir       string // where to run go and git ("" = the working directory)
}

// Built is an assembled image.
type Built struct {
	Index   v1.ImageIndex
	Version string
	Epoch   time.Time
}

// Build compiles shoal for each platform and assembles the index. Nothing is written outside a
// temporary directory, which is removed.
func Build(ctx context.Context, cfg Config) (*Built, error) {
	platforms, err := parsePlatforms(cfg.Platforms)
	if err != nil {
		return nil, err
	}
	if err := cfg.fillFromGit(ctx); err != nil {
		return nil, err
	}
	if strings.ContainsAny(cfg.Version, " \t\n\"'") || cfg.Version == "" {
		return nil, fmt.Errorf("version %q: must be one word", cfg.Version)
	}
	epoch := time.Unix(*cfg.Epoch, 0).UTC()
	base, err := baseLayer(epoch)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "shoal-image-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()

	labels := map[string]string{
		"org.opencontainers.image.title":       "shoal",
		"org.opencontainers.image.description": "peer-to-peer distribution of OCI container images: a node-local registry mirror",
		"org.opencontainers.image.version":     cfg.Version,
		"org.opencontainers.image.revision":    cfg.Revision,
		"org.opencontainers.image.source":      cfg.Source,
		"org.opencontainers.image.url":         cfg.Source,
		"org.opencontainers.image.created":     epoch.Format(time.RFC3339),
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		bin := filepath.Join(tmp, p.OS+"-"+p.Architecture, "shoal")
		if err := compile(ctx, cfg, p, bin); err != nil {
			return nil, err
		}
		img, err := platformImage(p, base, bin, epoch, labels)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", p.OS, p.Architecture, err)
		}
		plat := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &plat}})
	}
	idx = mutate.Annotations(idx, labels).(v1.ImageIndex)
	return &Built{Index: idx, Version: cfg.Version, Epoch: epoch}, nil
}

// platformImage is the base layer, a layer with the binary, and the config: shoal as the
// entrypoint, run as the non-root user.
func platformImage(p v1.Platform, base v1.Layer, bin string, epoch time.Time, labels map[string]string) (v1.Image, error) {
	binLayer, err := binaryLayer(bin, epoch)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	created := v1.Time{Time: epoch}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{Created: created, CreatedBy: "shoal-image: base (CA certificates, user nonroot, /tmp)"}},
		mutate.Addendum{Layer: binLayer, MediaType: types.OCILayer, History: v1.History{Created: created, CreatedBy: "shoal-image: " + BinaryPath}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = created
	cf.Author = ""
	cf.Config = v1.Config{
		Entrypoint: []string{BinaryPath},
		User:       fmt.Sprintf("%d:%d", UID, GID),
		WorkingDir: "/",
		Env: []string{
			"PATH=/usr/local/bin:/usr/bin:/bin",
			"SSL_CERT_FILE=" + caBundlePath,
		},
		ExposedPorts: map[string]struct{}{"5000/tcp": {}, "4001/tcp": {}},
		Labels:       labels,
	}
	return mutate.ConfigFile(img, cf)
}

// compile cross-compiles a static shoal: no cgo, no build paths, no build ID, stripped, with the
// version stamped; GOAMD64 and GOARM64 are pinned so the host's environment cannot change the code.
// -buildvcs=false: Go would otherwise embed the commit only where it can read the repository (a
// clone, not a source tarball or, here, a git worktree), so one commit would give two binaries;
// the commit is in the image's revision label instead.
func compile(ctx context.Context, cfg Config, p v1.Platform, out string) error {
	ldflags := "-s -w -buildid= -X main.buildVersion=" + cfg.Version
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags="+ldflags, "-o", out, shoalPackage)
	cmd.Dir = cfg.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture,
		"GOAMD64=v1", "GOARM64=v8.0", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build for %s/%s: %w\n%s", p.OS, p.Architecture, err, out)
	}
	return nil
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var ps []v1.Platform
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		p, err := v1.ParsePlatform(f)
		if err != nil || p.OS != "linux" || p.Architecture == "" {
			return nil, fmt.Errorf("platform %q: want linux/ARCH", f)
		}
		if p.Architecture == "arm64" && p.Variant == "" {
			p.Variant = "v8"
		}
		if p.Variant != "" && p.Architecture != "arm64" {
			return nil, fmt.Errorf("platform %q: variants are supported for arm64 (v8) only", f)
		}
		ps = append(ps, *p)
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("no platforms")
	}
	return ps, nil
}

// fillFromGit takes the version, revision and time of the commit checked out, for the fields the
// caller left empty.
func (cfg *Config) fillFromGit(ctx context.Context) error {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = cfg.Dir
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w (give --version, --revision and --source-date-epoch outside a git checkout)", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	var err error
	if cfg.Version == "" {
		if cfg.Version, err = git("describe", "--tags", "--always", "--dirty", "--abbrev=12"); err != nil {
			return err
		}
	}
	if cfg.Revision == "" {
		if cfg.Revision, err = git("rev-parse", "HEAD"); err != nil {
			return err
		}
	}
	if cfg.Epoch == nil {
		s, err := git("log", "-1", "--format=%ct")
		if err != nil {
			return err
		}
		e, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("commit time %q: %w", s, err)
		}
		cfg.Epoch = &e
	}
	return nil
}
