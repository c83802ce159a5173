package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/runtimeconf/cleanup"
	"github.com/shoal-oci/shoal/runtimeconf/containerd"
)

// The chart's post-delete hook: `cleanup` on every node, `cleanup-wait` once (docs/kubernetes.md).

func cleanupLogFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("LOG_LEVEL"), Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("LOG_FORMAT"), Usage: "text or json"},
	}
}

func cleanupCommand() *cli.Command {
	return &cli.Command{
		Name: "cleanup",
		Usage: "restore containerd's hosts.toml files as `configure containerd --remove` does, then answer " +
			cleanup.HealthPath + " with 200 on --listen for --serve-for, so cleanup-wait can confirm the node is clean",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "config-path", Value: containerd.DefaultConfigPath, EnvVars: env("CONTAINERD_CONFIG_PATH"),
				Usage: "containerd's registry config_path"},
			&cli.StringFlag{Name: "listen", Value: ":9403", EnvVars: env("CLEANUP_LISTEN"),
				Usage: "address of " + cleanup.HealthPath + ": 503 until the files are restored, then 200"},
			&cli.DurationFlag{Name: "serve-for", Value: 10 * time.Minute, EnvVars: env("CLEANUP_SERVE_FOR"),
				Usage: "how long to answer after the removal before exiting (0: until stopped)"},
		}, cleanupLogFlags()...),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c.App.ErrWriter, c.String("log-level"), c.String("log-format"))
			if err != nil {
				return err
			}
			if c.Duration("serve-for") < 0 {
				return fmt.Errorf("--serve-for %s: want 0 or more", c.Duration("serve-for"))
			}
			ln, err := net.Listen("tcp", c.String("listen"))
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			configPath := c.String("config-path")
			return cleanup.Serve(c.Context, ln, cleanup.ServeOptions{For: c.Duration("serve-for"), Log: log,
				Remove: func() error {
					changes, err := containerd.Remove(configPath)
					printChanges(c, changes)
					return err
				}})
		},
	}
}

func cleanupWaitCommand() *cli.Command {
	return &cli.Command{
		Name: "cleanup-wait",
		Usage: "wait until every address --endpoint's name resolves to answers " + cleanup.HealthPath +
			" with 200, the same addresses for --rounds rounds in a row; fail after --timeout",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "endpoint", Required: true, EnvVars: env("CLEANUP_ENDPOINT"),
				Usage: "host:port: the cleanup pods' headless Service name (or an IP) and their --listen port"},
			&cli.DurationFlag{Name: "timeout", Value: 3 * time.Minute, EnvVars: env("CLEANUP_TIMEOUT"),
				Usage: "give up (exit 1) after this long"},
			&cli.DurationFlag{Name: "interval", Value: cleanup.DefaultInterval, EnvVars: env("CLEANUP_INTERVAL"),
				Usage: "time between rounds"},
			&cli.IntFlag{Name: "rounds", Value: cleanup.DefaultRounds, EnvVars: env("CLEANUP_ROUNDS"),
				Usage: "rounds in a row that must find the same addresses, all done"},
		}, cleanupLogFlags()...),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c.App.ErrWriter, c.String("log-level"), c.String("log-format"))
			if err != nil {
				return err
			}
			if c.Duration("timeout") <= 0 || c.Duration("interval") <= 0 || c.Int("rounds") < 1 {
				return fmt.Errorf("--timeout and --interval must be positive and --rounds at least 1")
			}
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			err = cleanup.Wait(ctx, cleanup.WaitOptions{Endpoint: c.String("endpoint"), Interval: c.Duration("interval"),
				Rounds: c.Int("rounds"), Log: log})
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, "every cleanup pod behind", c.String("endpoint"), "restored its node's files")
			return nil
		},
	}
}
