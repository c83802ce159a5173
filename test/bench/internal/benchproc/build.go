package benchproc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot finds the shoal module's root from the working directory.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run this from inside the shoal module")
	}
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	if !strings.Contains(string(b), "module github.com/shoal-oci/shoal\n") {
		return "", fmt.Errorf("%s is not the shoal module", gomod)
	}
	return filepath.Dir(gomod), nil
}

// Source is a tree the benchmarks build their binaries from.
type Source struct {
	Dir  string // the tree's module root
	Desc string // for the report: "the working tree at git revision …", "git revision … (-rev …)"
}

// Build runs `go build -o out pkg` in the tree.
func (s Source) Build(ctx context.Context, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = s.Dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s in %s: %v\n%s", pkg, s.Desc, err, b)
	}
	return nil
}

// Checkout returns the tree to build from: with rev "", the working tree at root, which others
// may be editing; otherwise git revision rev of root, extracted under tmp/src, where each of
// overlay (directories relative to root, such as this benchmark's own) is replaced by its .go
// files from the working tree, so that a benchmark can measure a revision older than itself.
func Checkout(ctx context.Context, root, tmp, rev string, overlay ...string) (Source, error) {
	git := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", root}, args...)...).Output()
		return strings.TrimRight(string(out), "\n"), err
	}
	if rev == "" {
		return Source{Dir: root, Desc: workingTreeDesc(git)}, nil
	}
	full, err := git("rev-parse", "--verify", rev+"^{commit}")
	if err != nil {
		return Source{}, fmt.Errorf("-rev %q: not a commit", rev)
	}
	src := filepath.Join(tmp, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return Source{}, err
	}
	archive := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", full)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return Source{}, err
	}
	untar.Stdin = pipe
	if err := archive.Start(); err != nil {
		return Source{}, err
	}
	if b, err := untar.CombinedOutput(); err != nil {
		_ = archive.Wait()
		return Source{}, fmt.Errorf("extracting %s: %v\n%s", rev, err, b)
	}
	if err := archive.Wait(); err != nil {
		return Source{}, fmt.Errorf("git archive %s: %w", rev, err)
	}
	for _, dir := range overlay {
		if err := copyGoFiles(filepath.Join(root, dir), filepath.Join(src, dir)); err != nil {
			return Source{}, err
		}
	}
	desc := fmt.Sprintf("git revision %s (-rev %s)", full[:12], rev)
	if len(overlay) > 0 {
		desc = fmt.Sprintf("git revision %s (-rev %s; this benchmark's own files from the working tree)", full[:12], rev)
	}
	return Source{Dir: src, Desc: desc}, nil
}

// workingTreeDesc describes the working tree: its revision, and the files of the shoal binary
// that differ from it.
func workingTreeDesc(git func(args ...string) (string, error)) string {
	head, err := git("rev-parse", "--short=12", "HEAD")
	if err != nil {
		return "the working tree (no git revision)"
	}
	desc := "the working tree at git revision " + head
	st, err := git("status", "--porcelain", "--", "agent", "cmd", "registryapi", "seed", "internal", "p2p", "go.mod", "go.sum")
	if err == nil && st != "" {
		var files []string
		for l := range strings.SplitSeq(st, "\n") {
			if len(l) > 3 {
				files = append(files, strings.TrimSpace(l[3:]))
			}
		}
		desc += ", with uncommitted changes to " + strings.Join(files, ", ")
	}
	return desc
}

// copyGoFiles makes dst hold the .go files below src, and nothing else: what the revision had
// there could clash with them.
func copyGoFiles(src, dst string) error {
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
}
