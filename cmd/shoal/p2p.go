package main

import (
	"fmt"
	"os"

	"github.com/shoal-oci/shoal/p2p/keys"
	"github.com/urfave/cli/v2"
)

func idCommand() *cli.Command {
	return &cli.Command{
		Name:  "id",
		Usage: "print the node's peer ID (creating its identity key in the data directory if needed)",
		Flags: []cli.Flag{&cli.StringFlag{Name: "data-dir", Value: "/var/lib/shoal", EnvVars: env("DATA_DIR")}},
		Action: func(c *cli.Context) error {
			dir := c.String("data-dir")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			id, err := keys.PeerIDFromDataDir(dir)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(c.App.Writer, id)
			return err
		},
	}
}

func swarmKeyCommand() *cli.Command {
	return &cli.Command{
		Name:  "swarm-key",
		Usage: "print a new libp2p private-network key (save it to a file for --swarm-key)",
		Action: func(c *cli.Context) error {
			key, err := keys.NewSwarmKey()
			if err != nil {
				return err
			}
			_, err = c.App.Writer.Write(key)
			return err
		},
	}
}
