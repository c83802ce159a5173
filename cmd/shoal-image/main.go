// Command shoal-image builds the container image of Shoal without docker: it cross-compiles a
// static `shoal` for each platform, puts it on a base made here from scratch (CA certificates
// from a pinned Go module, a non-root user, /tmp), and assembles a multi-platform OCI index with
// go-containerregistry. Every time and every byte comes from the source tree, the pinned modules
// and the Go toolchain, so two builds of one commit give one digest.
//
//	go run ./cmd/shoal-image --out shoal-oci                        # an OCI layout
//	go run ./cmd/shoal-image --push ghcr.io/shoal-oci/shoal:v0.1.0  # a registry
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newApp().RunContext(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shoal-image:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:      "shoal-image",
		Usage:     "build the multi-platform container image of shoal (no docker needed)",
		UsageText: "shoal-image [--out DIR] [--push REF]... [options]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "write the image as an OCI layout into `DIR` (tagged with the version)"},
			&cli.StringSliceFlag{Name: "push", Usage: "push the index to `REF` (repeatable), e.g. " + DefaultRepository + ":v0.1.0"},
			&cli.BoolFlag{Name: "insecure", Usage: "allow plain HTTP to the --push registries"},
			&cli.StringFlag{Name: "platforms", Value: "linux/amd64,linux/arm64", Usage: "comma-separated `OS/ARCH` list"},
			&cli.StringFlag{Name: "version", Usage: "version stamped into the binary and the labels (default: git describe --tags --always --dirty)"},
			&cli.StringFlag{Name: "revision", Usage: "the commit, for the org.opencontainers.image.revision label (default: git rev-parse HEAD)"},
			&cli.Int64Flag{Name: "source-date-epoch", EnvVars: []string{"SOURCE_DATE_EPOCH"}, Value: -1,
				Usage: "Unix time of every file and record in the image (default: the commit time, git log -1 --format=%ct)"},
			&cli.StringFlag{Name: "source", Value: DefaultSource, Usage: "the org.opencontainers.image.source label"},
		},
		Action: func(c *cli.Context) error {
			cfg := Config{
				Version:   c.String("version"),
				Revision:  c.String("revision"),
				Source:    c.String("source"),
				Platforms: c.String("platforms"),
			}
			if e := c.Int64("source-date-epoch"); e >= 0 {
				cfg.Epoch = &e
			}
			if c.String("out") == "" && len(c.StringSlice("push")) == 0 {
				return fmt.Errorf("nothing to do: give --out DIR and/or --push REF")
			}
			return run(c.Context, cfg, c.String("out"), c.StringSlice("push"), c.Bool("insecure"))
		},
	}
}

func run(ctx context.Context, cfg Config, out string, push []string, insecure bool) error {
	built, err := Build(ctx, cfg)
	if err != nil {
		return err
	}
	digest, err := built.Index.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "built shoal %s (%s, source date %s): %s\n", built.Version, cfg.Platforms,
		built.Epoch.UTC().Format("2006-01-02T15:04:05Z"), digest)
	if out != "" {
		if err := WriteLayout(out, built); err != nil {
			return err
		}
		fmt.Printf("%s:%s@%s\n", out, built.Version, digest)
	}
	for _, ref := range push {
		pushed, err := Push(ctx, built.Index, ref, insecure)
		if err != nil {
			return err
		}
		fmt.Println(pushed)
	}
	return nil
}
