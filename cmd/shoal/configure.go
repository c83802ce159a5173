package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/runtimeconf"
	"github.com/shoal-oci/shoal/runtimeconf/containerd"
	"github.com/shoal-oci/shoal/runtimeconf/crio"
)

// runtimeFlags are what configure and doctor share. --registry and SHOAL_REGISTRY take the
// agent's own values (a host, a URL or name=URL), so an init container can be given the
// agent's environment.
func runtimeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "agent", Value: runtimeconf.DefaultAgent, EnvVars: env("AGENT"),
			Usage: "the agent's /v2 as the runtime reaches it: the first mirror of every registry"},
		&cli.StringSliceFlag{Name: "registry", EnvVars: env("REGISTRY"),
			Usage: "registry to mirror through the agent (repeatable): docker.io, ghcr.io, https://registry.example:5000, or name=URL as given to the agent (default: docker.io)"},
	}
}

func runtimeOptions(c *cli.Context) (*url.URL, []runtimeconf.Registry, error) {
	u, err := runtimeconf.ParseAgent(c.String("agent"))
	if err != nil {
		return nil, nil, fmt.Errorf("--agent: %w", err)
	}
	regs, err := runtimeconf.ParseRegistries(c.StringSlice("registry"))
	if err != nil {
		return nil, nil, fmt.Errorf("--registry: %w", err)
	}
	return u, regs, nil
}

func configureCommand() *cli.Command {
	return &cli.Command{
		Name:  "configure",
		Usage: "make the node's container runtime pull through the agent (see docs/runtimes.md)",
		Subcommands: []*cli.Command{
			{
				Name:  "containerd",
				Usage: "write hosts.toml under containerd's config_path with the agent as each registry's first host; --remove restores what was there",
				Flags: append(runtimeFlags(),
					&cli.StringFlag{Name: "config-path", Value: containerd.DefaultConfigPath, EnvVars: env("CONTAINERD_CONFIG_PATH"),
						Usage: "containerd's registry config_path"},
					&cli.BoolFlag{Name: "default", EnvVars: env("CONTAINERD_DEFAULT"),
						Usage: "also write _default/hosts.toml: every other registry tries the agent first too"},
					&cli.BoolFlag{Name: "remove", Usage: "restore every hosts.toml Shoal wrote under --config-path"}),
				Action: func(c *cli.Context) error {
					var changes []runtimeconf.Change
					var err error
					if c.Bool("remove") {
						changes, err = containerd.Remove(c.String("config-path"))
					} else {
						u, regs, perr := runtimeOptions(c)
						if perr != nil {
							return perr
						}
						changes, err = containerd.Configure(containerd.Options{ConfigPath: c.String("config-path"),
							Agent: u, Registries: regs, Default: c.Bool("default")})
					}
					printChanges(c, changes)
					return err
				},
			},
			{
				Name:  "crio",
				Usage: "write a registries.conf.d drop-in with the agent as each registry's first mirror (CRI-O, podman, skopeo); --remove deletes it",
				Flags: append(runtimeFlags(),
					&cli.StringFlag{Name: "dir", Value: crio.DefaultDropInDir, EnvVars: env("CRIO_REGISTRIES_DIR"),
						Usage: "the registries.conf.d directory"},
					&cli.StringFlag{Name: "registries-conf", Value: crio.DefaultMainConfig, EnvVars: env("CRIO_REGISTRIES_CONF"),
						Usage: "registries.conf, whose entries for the mirrored registries are kept after the agent"},
					&cli.BoolFlag{Name: "remove", Usage: "delete Shoal's drop-in"}),
				Action: func(c *cli.Context) error {
					var changes []runtimeconf.Change
					var err error
					if c.Bool("remove") {
						changes, err = crio.Remove(c.String("dir"))
					} else {
						u, regs, perr := runtimeOptions(c)
						if perr != nil {
							return perr
						}
						changes, err = crio.Configure(crio.Options{Dir: c.String("dir"), MainConfig: c.String("registries-conf"),
							Agent: u, Registries: regs})
					}
					printChanges(c, changes)
					return err
				},
			},
		},
	}
}

func printChanges(c *cli.Context, changes []runtimeconf.Change) {
	for _, ch := range changes {
		fmt.Fprintln(c.App.Writer, ch)
	}
}

// errProblems makes doctor exit non-zero after it printed its findings.
var errProblems = errors.New("problems found")

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check that containerd pulls through the agent: its config.toml, the hosts.toml files, the agent itself",
		Flags: append(runtimeFlags(),
			&cli.StringFlag{Name: "containerd-config", Value: containerd.DefaultConfigFile, EnvVars: env("CONTAINERD_CONFIG"),
				Usage: "containerd's config.toml"},
			&cli.StringFlag{Name: "config-path", Value: containerd.DefaultConfigPath, EnvVars: env("CONTAINERD_CONFIG_PATH"),
				Usage: "the config_path to suggest when containerd's config sets none"}),
		Action: func(c *cli.Context) error {
			u, regs, err := runtimeOptions(c)
			if err != nil {
				return err
			}
			findings := containerd.Check(containerd.DoctorOptions{ConfigFile: c.String("containerd-config"),
				ConfigPath: c.String("config-path"), Agent: u, Registries: regs})
			findings = append(findings, runtimeconf.CheckAgent(c.Context, http.DefaultClient, u)...)
			if n := runtimeconf.WriteFindings(c.App.Writer, findings); n > 0 {
				return fmt.Errorf("%w: %d", errProblems, n)
			}
			return nil
		},
	}
}
