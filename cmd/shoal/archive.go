package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/dustin/go-humanize"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/seed/archive"
)

// archiveFlags are the flags import and export share: where the seed is and how to reach it.
func archiveFlags() []cli.Flag {
	return append(adminClientFlags(),
		&cli.BoolFlag{Name: "insecure", EnvVars: env("INSECURE"),
			Usage: "allow unverified TLS to a seed that is not on loopback, and plain HTTP when no admin token is given"})
}

// archiveConfig is what import and export share, filled from archiveFlags.
type archiveConfig struct {
	Seed    string
	Options archive.Options
}

func archiveConfigFrom(c *cli.Context) (archiveConfig, error) {
	cfg := archiveConfig{Seed: c.String("seed"), Options: archive.Options{Insecure: c.Bool("insecure")}}
	if cfg.Seed == "" {
		return cfg, errors.New("--seed: want HOST:PORT")
	}
	var err error
	if cfg.Options.Token, err = readTokenFile(c.String("admin-token-file")); err != nil {
		return cfg, err
	}
	if path := c.String("tls-ca"); path != "" {
		cfg.Options.RootCAs, err = readCAFile(path)
	}
	return cfg, err
}

// importConfig is the configuration of `shoal import`.
type importConfig struct {
	archiveConfig
	Source string
}

func importCommand() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "push every image of an OCI layout, oci-archive or docker-archive into a seed",
		ArgsUsage: "PATH",
		Description: "PATH is an OCI image layout directory, an oci-archive or a docker-archive (`docker save`), told apart\n" +
			"by content. Each image goes to the repository and tag it is named by; see docs/import-export.md.",
		Flags: append(archiveFlags(),
			&cli.StringFlag{Name: "repo",
				Usage: "push every image to this repository (keeping its tag); needed for images named by a tag alone or not at all"},
		),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return errors.New("usage: shoal import PATH [--seed HOST:PORT] [--repo NAME]")
			}
			ac, err := archiveConfigFrom(c)
			if err != nil {
				return err
			}
			ac.Options.Repository = c.String("repo")
			return runImport(c.Context, importConfig{archiveConfig: ac, Source: args[0]}, c.App.Writer)
		},
	}
}

func runImport(ctx context.Context, cfg importConfig, w io.Writer) error {
	cfg.Options.Progress = func(p archive.Progress) {
		fmt.Fprintf(w, "%s: pushed %d/%d blobs, %s of %s\n", p.Ref, p.Blobs, p.BlobsTotal,
			humanize.Bytes(uint64(p.Bytes)), humanize.Bytes(uint64(p.BytesTotal)))
	}
	done, err := archive.Import(ctx, cfg.Source, cfg.Seed, cfg.Options)
	for _, i := range done {
		fmt.Fprintln(w, "imported", i)
	}
	if err != nil {
		return fmt.Errorf("import %s into %s: %w", cfg.Source, cfg.Seed, err)
	}
	return nil
}

// exportConfig is the configuration of `shoal export`.
type exportConfig struct {
	archiveConfig
	Ref, Dest, Format string
}

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write an image or index from a seed to an OCI layout, oci-archive or docker-archive",
		ArgsUsage: "REF PATH",
		Description: "REF is repo:tag or repo@sha256:... in the seed. PATH must not exist (see --force); it appears\n" +
			"only once complete. Without --ns a seed answers from its hosted (pushed) repositories, an agent from\n" +
			"its first upstream.",
		Flags: append(archiveFlags(),
			&cli.StringFlag{Name: "ns",
				Usage: "registry the image is in, sent as ?ns= like containerd does: an upstream of the seed or agent, or its hosted registry"},
			&cli.StringFlag{Name: "format", Value: archive.FormatOCIArchive,
				Usage: "oci (a layout directory), oci-archive (a tar of one) or docker-archive (for `docker load`; one platform)"},
			&cli.StringFlag{Name: "platform",
				Usage: "os/arch[/variant] of the image to export from a multi-platform index; docker-archive only"},
			&cli.BoolFlag{Name: "force", Usage: "replace PATH if it exists"},
		),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 2 {
				return errors.New("usage: shoal export REF PATH [--seed HOST:PORT] [--format oci|oci-archive|docker-archive]")
			}
			ac, err := archiveConfigFrom(c)
			if err != nil {
				return err
			}
			ac.Options.Overwrite = c.Bool("force")
			ac.Options.Namespace = c.String("ns")
			if s := c.String("platform"); s != "" {
				p, err := v1.ParsePlatform(s)
				if err != nil {
					return fmt.Errorf("--platform %q: %w", s, err)
				}
				ac.Options.Platform = p
			}
			cfg := exportConfig{archiveConfig: ac, Ref: args[0], Dest: args[1], Format: c.String("format")}
			return runExport(c.Context, cfg, c.App.Writer)
		},
	}
}

func runExport(ctx context.Context, cfg exportConfig, w io.Writer) error {
	if err := archive.Export(ctx, cfg.Seed+"/"+cfg.Ref, cfg.Dest, cfg.Format, cfg.Options); err != nil {
		return err
	}
	fmt.Fprintf(w, "exported %s to %s (%s)\n", cfg.Ref, cfg.Dest, cfg.Format)
	return nil
}

// positionalArgs returns the command's positional arguments, setting any flags that follow them:
// urfave/cli v2 stops parsing flags at the first positional, and `shoal import PATH --seed X` is
// how people type it.
func positionalArgs(c *cli.Context) ([]string, error) {
	var pos []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), nil
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		n, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var f cli.Flag
		for _, cf := range c.Command.Flags {
			if slices.Contains(cf.Names(), n) {
				f = cf
			}
		}
		if f == nil {
			return nil, fmt.Errorf("flag provided but not defined: %s", a)
		}
		if !hasValue {
			if _, ok := f.(*cli.BoolFlag); ok {
				v = "true"
			} else if i+1 < len(args) {
				i++
				v = args[i]
			} else {
				return nil, fmt.Errorf("flag needs an argument: %s", a)
			}
		}
		if err := c.Set(f.Names()[0], v); err != nil {
			return nil, fmt.Errorf("%s: %w", a, err)
		}
	}
	return pos, nil
}
