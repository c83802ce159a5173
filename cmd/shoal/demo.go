package main

import (
	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/internal/demo"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run an origin registry, an agent and a client in this process and show a pull through the agent",
		Action: func(c *cli.Context) error {
			return demo.Run(c.Context, c.App.Writer)
		},
	}
}
