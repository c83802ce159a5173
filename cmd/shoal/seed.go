package main

import (
	"fmt"
	"net"

	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/seed"
	"github.com/shoal-oci/shoal/seed/hosted"
)

func seedFlags() []cli.Flag {
	return append(agentFlags(),
		&cli.IntFlag{Name: "replicas", Value: 1, EnvVars: env("REPLICAS"),
			Usage: "how many seeds keep each pinned image, for pins that name no count; repaired when a seed disappears"},
		&cli.DurationFlag{Name: "repair-interval", Value: seed.DefaultRepairInterval, EnvVars: env("REPAIR_INTERVAL"),
			Usage: "how often replica counts are checked"},
		&cli.DurationFlag{Name: "upload-timeout", Value: hosted.DefaultUploadTimeout, EnvVars: env("UPLOAD_TIMEOUT"),
			Usage: "remove a push's upload session, and its bytes, after it is idle this long"},
		&cli.BoolFlag{Name: "allow-deletes", Value: true, EnvVars: env("ALLOW_DELETES"),
			Usage: "accept DELETE of pushed manifests, tags and blobs"},
		seedAuthorityKeyFlag(),
	)
}

func seedCommand() *cli.Command {
	return &cli.Command{
		Name: "seed",
		Usage: "run a seed: an agent that pins what it preheats and what is pushed to it, fetches from the origin for the cluster, " +
			"keeps serving when the origin is down, and accepts pushes",
		Flags: seedFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := seedConfig(c)
			if err != nil || c.Bool(checkConfigFlag.Name) {
				return err
			}
			// The listener first, as for an agent: nothing is created before it opens.
			ln, err := net.Listen("tcp", cfg.Agent.Listen)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			s, err := seed.New(cfg)
			if err != nil {
				ln.Close()
				return err
			}
			return s.Serve(c.Context, ln)
		},
	}
}

func seedConfig(c *cli.Context) (seed.Config, error) {
	ac, err := agentConfig(c, c.App.ErrWriter)
	if err != nil {
		return seed.Config{}, err
	}
	if ac.P2P == nil {
		return seed.Config{}, fmt.Errorf("--p2p=false: a seed serves the cluster through peer-to-peer")
	}
	if ac.AdminToken == "" && !agent.IsLoopbackAddress(ac.Listen) {
		return seed.Config{}, fmt.Errorf("--listen %s is not loopback: a seed accepting pushes there needs --admin-token-file", ac.Listen)
	}
	if r := c.Int("replicas"); r < 1 || r > 64 {
		return seed.Config{}, fmt.Errorf("--replicas %d: want 1 to 64", r)
	}
	if c.Duration("upload-timeout") <= 0 {
		return seed.Config{}, fmt.Errorf("--upload-timeout %s: want a positive duration", c.Duration("upload-timeout"))
	}
	return seed.Config{Agent: ac, Replicas: c.Int("replicas"), RepairInterval: c.Duration("repair-interval"),
		UploadTimeout: c.Duration("upload-timeout"), NoDeletes: !c.Bool("allow-deletes")}, nil
}
