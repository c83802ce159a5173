package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/agent/store/verify"
)

// storeCommand holds what operators do to a stopped node's data directory.
func storeCommand() *cli.Command {
	return &cli.Command{
		Name:  "store",
		Usage: "inspect a stopped node's content store",
		Subcommands: []*cli.Command{{
			Name:  "verify",
			Usage: "check every committed object against its digest (exit status 1 when any is wrong, repaired or not)",
			Description: "Reads every committed object, its recorded chunk map and every partial file of a stopped " +
				"agent or seed. Refuses while a node has the data directory open. --repair removes the objects " +
				"that fail, with their records and the pins that keep them, so that the next pull fetches them again.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "data-dir", Value: "/var/lib/shoal", EnvVars: env("DATA_DIR"),
					Usage: "the node's data directory"},
				&cli.BoolFlag{Name: "repair", Usage: "remove objects that fail (and their records and pins)"},
				&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
				&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only what is wrong and the summary"},
			},
			Action: func(c *cli.Context) error {
				return runVerify(c, verifyConfig{DataDir: c.String("data-dir"), Repair: c.Bool("repair"),
					JSON: c.Bool("json"), Quiet: c.Bool("quiet")})
			},
		}},
	}
}

// verifyConfig is `shoal store verify`'s configuration.
type verifyConfig struct {
	DataDir             string
	Repair, JSON, Quiet bool
}

func runVerify(c *cli.Context, cfg verifyConfig) error {
	out := c.App.Writer
	opts := verify.Options{Repair: cfg.Repair}
	if !cfg.JSON {
		opts.OnObject = func(o verify.Object) {
			if !o.OK || !cfg.Quiet {
				printObject(out, o)
			}
		}
		opts.OnPartial = func(p verify.Partial) {
			if !cfg.Quiet {
				printPartial(out, p)
			}
		}
	}
	rep, err := verify.Dir(c.Context, cfg.DataDir, opts)
	if err != nil && rep == nil {
		return err
	}
	if cfg.JSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(rep); jerr != nil {
			return jerr
		}
	} else {
		printSummary(out, rep)
	}
	if err != nil {
		return err
	}
	switch {
	case !rep.OK() && cfg.Repair:
		return fmt.Errorf("%d of %d objects in %s did not verify and were removed", rep.Bad, len(rep.Objects), cfg.DataDir)
	case !rep.OK():
		return fmt.Errorf("%d of %d objects in %s do not verify", rep.Bad, len(rep.Objects), cfg.DataDir)
	}
	return nil
}

func printObject(w io.Writer, o verify.Object) {
	name := string(o.Digest)
	if name == "" {
		name = o.Path
	}
	switch {
	case o.Removed:
		fmt.Fprintf(w, "REMOVED  %s  %s\n", name, o.Problem)
	case !o.OK:
		fmt.Fprintf(w, "BAD      %s  %s\n", name, o.Problem)
	default:
		fmt.Fprintf(w, "ok       %s  %d bytes, chunk map %s\n", name, o.Size, o.Map)
	}
}

func printPartial(w io.Writer, p verify.Partial) {
	name := string(p.Digest)
	if name == "" {
		name = p.Path
	}
	line := fmt.Sprintf("partial  %s  %s", name, p.Outcome)
	if p.Outcome == verify.Resume {
		line += fmt.Sprintf(": %d of %d chunks verify (%d covered by its map)", p.Verified, p.Chunks, p.Covered)
	}
	if p.Note != "" {
		line += "; " + p.Note
	}
	fmt.Fprintln(w, line)
}

func printSummary(w io.Writer, r *verify.Report) {
	// Repairs are printed after the fact: the verdicts went out as they were reached.
	for _, o := range r.Objects {
		if o.Removed {
			printObject(w, o)
		}
	}
	for _, k := range r.RemovedPins {
		fmt.Fprintf(w, "UNPINNED %s  (it kept removed content; preheat it again)\n", k)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note     %s\n", n)
	}
	fmt.Fprintf(w, "%d objects, %d bad; %d partial files\n", len(r.Objects), r.Bad, len(r.Partials))
}
