package main

import (
	"crypto/ed25519"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/seedauth"
)

// seedAuthorityFlags say which peers a node takes as seeds; every node has them.
func seedAuthorityFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "seed-authority", EnvVars: env("SEED_AUTHORITY"),
			Usage: "seed authority public key (from `shoal seed-authority create`; repeatable or comma-separated): only peers it authorized are seeds; without any, no peer is"},
		&cli.StringSliceFlag{Name: "seed-peer", EnvVars: env("SEED_PEER"),
			Usage: "peer ID taken as a seed without a statement (repeatable or comma-separated)"},
	}
}

// seedAuthorityKeyFlag is the seed's own authorization.
func seedAuthorityKeyFlag() cli.Flag {
	return &cli.StringFlag{Name: "seed-authority-key", EnvVars: env("SEED_AUTHORITY_KEY"),
		Usage: "seed authority private key file (from `shoal seed-authority create`): the seed signs its own peer ID with it, and nodes trusting the key take it as a seed"}
}

// applySeedAuthority fills pc's seed authority from the flags.
func applySeedAuthority(c *cli.Context, pc *p2p.Config) error {
	for _, s := range c.StringSlice("seed-authority") {
		k, err := seedauth.ParsePublicKey(s)
		if err != nil {
			return fmt.Errorf("--seed-authority: %w", err)
		}
		pc.SeedAuthorities = append(pc.SeedAuthorities, k)
	}
	for _, s := range c.StringSlice("seed-peer") {
		id, err := peer.Decode(s)
		if err != nil {
			return fmt.Errorf("--seed-peer %q: not a peer ID (see `shoal id`): %w", s, err)
		}
		pc.SeedPeers = append(pc.SeedPeers, id)
	}
	if path := c.String("seed-authority-key"); path != "" {
		k, err := seedauth.ReadKeyFile(path)
		if err != nil {
			return fmt.Errorf("--seed-authority-key: %w", err)
		}
		pc.SeedAuthorityKey = k
	}
	return nil
}

func seedAuthorityCommand() *cli.Command {
	keyFlag := &cli.StringFlag{Name: "key", Required: true, Usage: "the authority's private key file"}
	return &cli.Command{
		Name:  "seed-authority",
		Usage: "manage the seed authority: the key that decides which nodes are seeds",
		Subcommands: []*cli.Command{
			{
				Name: "create",
				Usage: "create a seed authority key pair: the private key goes to --key (mode 0600; give it to seeds as --seed-authority-key), " +
					"the public key is printed (give it to every node as --seed-authority)",
				Flags: []cli.Flag{keyFlag},
				Action: func(c *cli.Context) error {
					k, err := seedauth.NewKey()
					if err != nil {
						return err
					}
					if err := seedauth.WriteKeyFile(c.String("key"), k); err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.App.Writer, seedauth.FormatPublicKey(k.Public().(ed25519.PublicKey)))
					return err
				},
			},
			{
				Name:  "public",
				Usage: "print the public key of a seed authority key file",
				Flags: []cli.Flag{keyFlag},
				Action: func(c *cli.Context) error {
					k, err := seedauth.ReadKeyFile(c.String("key"))
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.App.Writer, seedauth.FormatPublicKey(k.Public().(ed25519.PublicKey)))
					return err
				},
			},
		},
	}
}
