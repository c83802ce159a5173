package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/urfave/cli/v2"
)

// readTokenFile reads the admin token from path ("" means none).
func readTokenFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--admin-token-file %s is empty", path)
	}
	return tok, nil
}

// adminClientFlags say which node an admin command talks to.
func adminClientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "seed", Value: "127.0.0.1:5000", EnvVars: env("SEED"),
			Usage: "the seed (or local agent) to ask: HOST:PORT (plain HTTP on loopback, HTTPS elsewhere) or a URL; a token never goes over plain HTTP beyond loopback"},
		&cli.StringFlag{Name: "admin-token-file", EnvVars: env("ADMIN_TOKEN_FILE"),
			Usage: "file holding the node's admin token (needed unless the node listens on loopback without one)"},
		&cli.StringFlag{Name: "tls-ca", EnvVars: env("TLS_CA"),
			Usage: "PEM file of the CA certificates that sign the node's --tls-cert (default: the system's)"},
	}
}

func adminClient(c *cli.Context) (*pins.Client, error) {
	tok, err := readTokenFile(c.String("admin-token-file"))
	if err != nil {
		return nil, err
	}
	cl := pins.NewClient(c.String("seed"), tok)
	if path := c.String("tls-ca"); path != "" {
		pool, err := readCAFile(path)
		if err != nil {
			return nil, err
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		cl.HTTP = &http.Client{Transport: t}
	}
	return cl, nil
}

// readCAFile reads the CA certificates of --tls-ca.
func readCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// imageFlags select what of an image to fetch.
func imageFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "platform",
			Usage: "platform of a multi-platform image to fetch, os/arch[/variant] (repeatable; default: the node's own)"},
		&cli.BoolFlag{Name: "all-platforms", Usage: "fetch every platform of a multi-platform image"},
	}
}

func preheatCommand() *cli.Command {
	return &cli.Command{
		Name:      "preheat",
		Usage:     "have a seed (or the local agent) fetch an image from the origin and announce it, before a rollout",
		ArgsUsage: "REF",
		Flags:     append(adminClientFlags(), imageFlags()...),
		Action: func(c *cli.Context) error {
			return runImageJob(c, func(cl *pins.Client, req pins.PreheatRequest, show func(pins.Progress)) (pins.Progress, error) {
				return cl.Preheat(c.Context, req, show)
			})
		},
	}
}

func pinCommand() *cli.Command {
	return &cli.Command{
		Name:  "pin",
		Usage: "keep images from garbage collection, on enough seeds",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "fetch an image and pin it",
				ArgsUsage: "REF",
				Flags: append(append(adminClientFlags(), imageFlags()...),
					&cli.IntFlag{Name: "replicas", Usage: "how many seeds keep the image (default: the seed's --replicas)"}),
				Action: func(c *cli.Context) error {
					return runImageJob(c, func(cl *pins.Client, req pins.PreheatRequest, show func(pins.Progress)) (pins.Progress, error) {
						req.Replicas = c.Int("replicas")
						return cl.Pin(c.Context, req, show)
					})
				},
			},
			{
				Name:      "rm",
				Usage:     "unpin an image (on every seed that holds it)",
				ArgsUsage: "REF",
				Flags:     adminClientFlags(),
				Action: func(c *cli.Context) error {
					args, err := positionalArgs(c)
					if err != nil {
						return err
					}
					if len(args) != 1 {
						return fmt.Errorf("usage: shoal pin rm REF")
					}
					cl, err := adminClient(c)
					if err != nil {
						return err
					}
					if err := cl.Unpin(c.Context, args[0]); err != nil {
						return fmt.Errorf("unpinning %s: %w", args[0], err)
					}
					fmt.Fprintf(c.App.Writer, "unpinned %s\n", args[0])
					return nil
				},
			},
			{
				Name:  "ls",
				Usage: "list the node's pins",
				Flags: adminClientFlags(),
				Action: func(c *cli.Context) error {
					cl, err := adminClient(c)
					if err != nil {
						return err
					}
					pins, err := cl.Pins(c.Context)
					if err != nil {
						return fmt.Errorf("listing pins: %w", err)
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "REF\tKIND\tDIGEST\tSIZE\tOBJECTS\tREPLICAS\tCREATED")
					for _, p := range pins {
						kind := "upstream"
						if p.Hosted {
							kind = "pushed"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", p.Ref, kind, p.Digest, humanize.Bytes(uint64(p.Bytes)),
							len(p.Digests), max(p.Replicas, 1), p.Created.Local().Format(time.DateTime))
					}
					return tw.Flush()
				},
			},
		},
	}
}

// runImageJob runs a preheat or a pin for the REF argument, printing progress.
func runImageJob(c *cli.Context, job func(*pins.Client, pins.PreheatRequest, func(pins.Progress)) (pins.Progress, error)) error {
	args, err := positionalArgs(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return fmt.Errorf("usage: shoal %s REF", c.Command.FullName())
	}
	cl, err := adminClient(c)
	if err != nil {
		return err
	}
	req := pins.PreheatRequest{Ref: args[0], Platforms: c.StringSlice("platform"), AllPlatforms: c.Bool("all-platforms")}
	last, err := job(cl, req, progressPrinter(c.App.Writer))
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.Command.FullName(), args[0], err)
	}
	verb := "preheated"
	if last.Pinned {
		verb = "pinned"
	}
	fmt.Fprintf(c.App.Writer, "%s %s@%s: %d manifests, %d blobs, %s\n", verb, last.Ref, last.Digest,
		last.Manifests, last.Blobs, humanize.Bytes(uint64(last.Bytes)))
	return nil
}

// progressPrinter prints a line per report, at most one "progress" line a second.
func progressPrinter(w io.Writer) func(pins.Progress) {
	var last time.Time
	return func(p pins.Progress) {
		switch p.Event {
		case "resolved":
			fmt.Fprintf(w, "%s resolved to %s: %d manifests, %d blobs, %s\n", p.Ref, p.Digest, p.Manifests, p.Blobs, humanize.Bytes(uint64(p.Bytes)))
		case "progress":
			if time.Since(last) < time.Second && p.BlobsDone < p.Blobs {
				return
			}
			last = time.Now()
			fmt.Fprintf(w, "  %d/%d blobs, %s of %s\n", p.BlobsDone, p.Blobs, humanize.Bytes(uint64(p.BytesDone)), humanize.Bytes(uint64(p.Bytes)))
		}
	}
}
