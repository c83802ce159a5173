// Command shoal is the Shoal node: a peer-to-peer pull-through mirror for OCI images.
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
		fmt.Fprintln(os.Stderr, "shoal:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:                 "shoal",
		Usage:                "peer-to-peer distribution of OCI container images",
		Version:              version(),
		EnableBashCompletion: true,
		Commands: []*cli.Command{agentCommand(), seedCommand(), demoCommand(), preheatCommand(), pinCommand(),
			importCommand(), exportCommand(), idCommand(), swarmKeyCommand(), seedAuthorityCommand(), configureCommand(), doctorCommand(), cleanupCommand(), cleanupWaitCommand(), storeCommand(), versionCommand()},
	}
}
