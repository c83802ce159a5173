package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/urfave/cli/v2"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/agent/access"
	"github.com/shoal-oci/shoal/internal/httpbound"
	"github.com/shoal-oci/shoal/internal/httpguard"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/admission"
	"github.com/shoal-oci/shoal/p2p/bootaddr"
	"github.com/shoal-oci/shoal/p2p/keys"
	"github.com/shoal-oci/shoal/p2p/providerquota"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

func env(name string) []string { return []string{"SHOAL_" + name} }

func agentFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:5000", EnvVars: env("LISTEN"),
			Usage: "address of the /v2 registry endpoint, /metrics, /healthz and /readyz"},
		&cli.StringFlag{Name: "metrics-listen", EnvVars: env("METRICS_LISTEN"),
			Usage: "also serve /metrics, /healthz and /readyz (not /v2) on this address, e.g. :9090 for Prometheus and probes while --listen stays on loopback; off by default"},
		&cli.StringFlag{Name: "data-dir", Value: "/var/lib/shoal", EnvVars: env("DATA_DIR"),
			Usage: "directory of the content store"},
		&cli.StringSliceFlag{Name: "registry", EnvVars: env("REGISTRY"),
			Usage: "upstream registry URL (repeatable), or NAME=URL[/PREFIX] to serve registry NAME from another host, e.g. docker.io=https://harbor.corp/dockerhub-proxy; the first serves requests without ?ns= or a /v2/<registry>/ prefix (default: https://registry-1.docker.io; \"none\": no origin, the cluster's seeds only)"},
		&cli.StringFlag{Name: "hosted-registry", Value: agent.DefaultHostedRegistry, EnvVars: env("HOSTED_REGISTRY"),
			Usage: "registry name of the repositories pushed to the seeds: a request whose ?ns= names it is served from the seeds, and no other is; not one of the --registry upstreams"},
		&cli.StringFlag{Name: "docker-config", EnvVars: env("DOCKER_CONFIG"),
			Usage: "docker config.json with credentials for the upstreams (default: anonymous)"},
		&cli.StringSliceFlag{Name: "node-wide-credentials", EnvVars: env("NODE_WIDE_CREDENTIALS"),
			Usage: "registry host (repeatable) whose private repositories every local client may read with the --docker-config credentials; otherwise each client needs its own, checked at the origin"},
		&cli.DurationFlag{Name: "private-access-ttl", Value: access.DefaultTTL, EnvVars: env("PRIVATE_ACCESS_TTL"),
			Usage: "how long the origin's acceptance of a client credential for a private repository is reused (one origin request per credential, repository and TTL)"},
		&cli.DurationFlag{Name: "private-offline-window", Value: access.DefaultOfflineWindow, EnvVars: env("PRIVATE_OFFLINE_WINDOW"),
			Usage: "while the origin is unreachable, serve private content only to credentials it accepted within this window"},
		&cli.DurationFlag{Name: "tag-ttl", Value: agent.DefaultTagTTL, EnvVars: env("TAG_TTL"),
			Usage: "how long a tag resolution is reused before asking the origin again"},
		&cli.StringFlag{Name: "max-store-size", Value: "0", EnvVars: env("MAX_STORE_SIZE"),
			Usage: "evict least recently used content past this size (e.g. 50GiB, 200GB), counting fetches in flight and partial files; 0 = no limit"},
		&cli.StringFlag{Name: "chunk-size", Value: "4MiB", EnvVars: env("CHUNK_SIZE"),
			Usage: "what one swarm request asks a peer for, in whole pieces"},
		&cli.StringFlag{Name: "piece-size", Value: "512KiB", EnvVars: env("PIECE_SIZE"),
			Usage: "unit of verified peer transfer (chunk map states), a multiple of 128 bytes, at most --chunk-size; the same on every node of a cluster"},
		&cli.BoolFlag{Name: "p2p", Value: true, EnvVars: env("P2P"),
			Usage: "share content with peers; --p2p=false runs a plain mirror"},
		&cli.StringSliceFlag{Name: "p2p-listen", Value: cli.NewStringSlice(p2p.DefaultListenAddr), EnvVars: env("P2P_LISTEN"),
			Usage: "libp2p listen multiaddr (repeatable; TCP)"},
		&cli.StringSliceFlag{Name: "bootstrap", EnvVars: env("BOOTSTRAP"),
			Usage: "peer to join through (repeatable): a multiaddr with or without /p2p/<id>, or dns:<name>:<port>"},
		&cli.StringFlag{Name: "swarm-key", EnvVars: env("SWARM_KEY"),
			Usage: "libp2p private-network key file (from `shoal swarm-key`); peers without the same key cannot connect"},
		&cli.StringSliceFlag{Name: "allow-peer", EnvVars: env("ALLOW_PEER"),
			Usage: "peer ID admitted to this node (repeatable; `shoal id` prints a node's); when set, no other peer can connect"},
		&cli.IntFlag{Name: "provider-records-per-peer", Value: providerquota.DefaultPerPeer, EnvVars: env("PROVIDER_RECORDS_PER_PEER"),
			Usage: "live DHT provider records this node stores for each other peer; more are refused"},
		&cli.IntFlag{Name: "max-coordinated-fetches", Value: agent.DefaultMaxCoordinatedFetches, EnvVars: env("MAX_COORDINATED_FETCHES"),
			Usage: "origin fetches this node runs at once for other nodes, as their coordinator; more are answered busy and the asking node fetches itself"},
		&cli.StringFlag{Name: "max-download-rate", Value: "0", EnvVars: env("MAX_DOWNLOAD_RATE"),
			Usage: "cap bytes per second received from peers and origins (e.g. 100MB); 0 = unlimited"},
		&cli.StringFlag{Name: "max-upload-rate", Value: "0", EnvVars: env("MAX_UPLOAD_RATE"),
			Usage: "cap bytes per second sent to peers (e.g. 100MB), which also sizes the chunk upload slots (one per MiB/s, 2 to 8); 0 = unlimited (2 slots)"},
		&cli.DurationFlag{Name: "first-byte-timeout", Value: agent.DefaultFirstByteTimeout, EnvVars: env("FIRST_BYTE_TIMEOUT"),
			Usage: "a pull whose answer has not begun within this time gets 503 UNAVAILABLE, which sends the runtime to its next host, whatever peers and origins do"},
		&cli.DurationFlag{Name: "write-stall-timeout", Value: httpbound.DefaultStallTimeout, EnvVars: env("WRITE_STALL_TIMEOUT"),
			Usage: "close an HTTP connection whose client takes no bytes of its response (less than 1 MiB of a file), or sends no bytes of its request body, for this long"},
		&cli.IntFlag{Name: "max-connections", Value: agent.DefaultMaxConnections, EnvVars: env("MAX_CONNECTIONS"),
			Usage: "connections open at once on --listen; more are answered 503 and closed"},
		&cli.StringFlag{Name: "debug-listen", EnvVars: env("DEBUG_LISTEN"),
			Usage: "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060); off by default"},
		&cli.StringFlag{Name: "admin-token-file", EnvVars: env("ADMIN_TOKEN_FILE"),
			Usage: "file holding the bearer token that the admin endpoints (/shoal/v1) and push require; without it they are open on loopback only"},
		&cli.StringSliceFlag{Name: "allowed-host", EnvVars: env("ALLOWED_HOST"),
			Usage: "host name (repeatable) that admin and push requests may name in their Host header, besides IP addresses, localhost and the --listen name, e.g. seed-1.example.com"},
		&cli.StringFlag{Name: "tls-cert", EnvVars: env("TLS_CERT"),
			Usage: "PEM certificate (chain) file: serve --listen (/v2 and the admin endpoints) over HTTPS; with --tls-key"},
		&cli.StringFlag{Name: "tls-key", EnvVars: env("TLS_KEY"),
			Usage: "PEM private key file of --tls-cert"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("LOG_LEVEL"),
			Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("LOG_FORMAT"),
			Usage: "text or json"},
		checkConfigFlag,
	}, seedAuthorityFlags()...)
}

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the node agent: a pull-through registry mirror for the local container runtime",
		Flags: agentFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := agentConfig(c, c.App.ErrWriter)
			if err != nil || c.Bool(checkConfigFlag.Name) {
				return err
			}
			// The listener first: a port in use is reported before the data directory is
			// created or the peer listener opened.
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			a, err := agent.New(cfg)
			if err != nil {
				ln.Close()
				return err
			}
			return a.Serve(c.Context, ln)
		},
	}
}

func agentConfig(c *cli.Context, logOut io.Writer) (agent.Config, error) {
	log, err := newLogger(logOut, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return agent.Config{}, err
	}
	for _, name := range []string{"listen", "metrics-listen", "debug-listen"} {
		if err := checkListenAddr(name, c.String(name), name == "listen"); err != nil {
			return agent.Config{}, err
		}
	}
	for _, h := range c.StringSlice("allowed-host") {
		if h = strings.TrimSpace(h); h != "" && !httpguard.ValidName(h) {
			return agent.Config{}, fmt.Errorf("--allowed-host %q: want a host name such as seed-1.example.com, without port or scheme", h)
		}
	}
	if err := checkTLSFiles(c.String("tls-cert"), c.String("tls-key")); err != nil {
		return agent.Config{}, err
	}
	maxStore, err := humanize.ParseBytes(c.String("max-store-size"))
	if err != nil {
		return agent.Config{}, fmt.Errorf("--max-store-size %q: %w", c.String("max-store-size"), err)
	}
	chunkSize, err := humanize.ParseBytes(c.String("chunk-size"))
	if err == nil && (chunkSize == 0 || chunkSize%128 != 0 || chunkSize > 1<<30) {
		err = errors.New("want a multiple of 128 bytes, at most 1 GiB")
	}
	if err != nil {
		return agent.Config{}, fmt.Errorf("--chunk-size %q: %w", c.String("chunk-size"), err)
	}
	pieceSize, err := humanize.ParseBytes(c.String("piece-size"))
	if err == nil && (pieceSize == 0 || pieceSize%128 != 0) {
		err = errors.New("want a multiple of 128 bytes")
	}
	if err != nil {
		return agent.Config{}, fmt.Errorf("--piece-size %q: %w", c.String("piece-size"), err)
	}
	var rates [2]uint64
	for i, name := range []string{"max-download-rate", "max-upload-rate"} {
		if rates[i], err = humanize.ParseBytes(c.String(name)); err != nil {
			return agent.Config{}, fmt.Errorf("--%s %q: %w", name, c.String(name), err)
		}
	}
	regs := c.StringSlice("registry")
	switch {
	case len(regs) == 0:
		regs = []string{"https://registry-1.docker.io"}
	case len(regs) == 1 && regs[0] == "none":
		regs = nil // an air-gapped site: everything comes from the seeds
	case slices.Contains(regs, "none"):
		return agent.Config{}, errors.New(`--registry none: "none" cannot be combined with registries`)
	}
	if len(regs) > 0 {
		if _, err := origin.NewSet(regs); err != nil {
			return agent.Config{}, fmt.Errorf("--registry: %w", err)
		}
	}
	if h := c.String("hosted-registry"); !names.ValidRegistryHost(h) {
		return agent.Config{}, fmt.Errorf("--hosted-registry %q: want a registry host[:port], such as %s", h, agent.DefaultHostedRegistry)
	}
	token, err := readTokenFile(c.String("admin-token-file"))
	if err != nil {
		return agent.Config{}, err
	}
	var pc *p2p.Config
	if c.Bool("p2p") {
		pc = &p2p.Config{ListenAddrs: c.StringSlice("p2p-listen"), Bootstrap: c.StringSlice("bootstrap")}
		if path := c.String("swarm-key"); path != "" {
			key, err := os.ReadFile(path)
			if err != nil {
				return agent.Config{}, fmt.Errorf("--swarm-key: %w", err)
			}
			if _, err := keys.ParseSwarmKey(key); err != nil {
				return agent.Config{}, fmt.Errorf("--swarm-key %s: %w", path, err)
			}
			pc.SwarmKey = key
		}
		for _, b := range pc.Bootstrap {
			if _, err := bootaddr.Parse(b); err != nil {
				return agent.Config{}, fmt.Errorf("--bootstrap %q: %w", b, err)
			}
		}
		for _, s := range c.StringSlice("allow-peer") {
			if s = strings.TrimSpace(s); s == "" {
				continue // SHOAL_ALLOW_PEER set but empty
			}
			id, err := peer.Decode(s)
			if err != nil {
				return agent.Config{}, fmt.Errorf("--allow-peer %q: not a peer ID: %w", s, err)
			}
			pc.AllowPeers = append(pc.AllowPeers, id)
		}
		if pc.MaxProviderRecordsPerPeer = c.Int("provider-records-per-peer"); pc.MaxProviderRecordsPerPeer < 1 {
			return agent.Config{}, fmt.Errorf("--provider-records-per-peer %d: want at least 1", pc.MaxProviderRecordsPerPeer)
		}
		if err := applySeedAuthority(c, pc); err != nil {
			return agent.Config{}, err
		}
		if err := checkOpen(pc); err != nil {
			return agent.Config{}, err
		}
	}
	if c.Int("max-coordinated-fetches") < 1 {
		return agent.Config{}, fmt.Errorf("--max-coordinated-fetches %d: want at least 1", c.Int("max-coordinated-fetches"))
	}
	for _, name := range []string{"first-byte-timeout", "write-stall-timeout"} {
		if c.Duration(name) < time.Second {
			return agent.Config{}, fmt.Errorf("--%s %s: want at least 1s", name, c.Duration(name))
		}
	}
	if c.Int("max-connections") < 1 {
		return agent.Config{}, fmt.Errorf("--max-connections %d: want at least 1", c.Int("max-connections"))
	}
	nodeWide := c.StringSlice("node-wide-credentials")
	for _, h := range nodeWide {
		if !names.ValidRegistryHost(h) {
			return agent.Config{}, fmt.Errorf("--node-wide-credentials %q: want a registry host[:port], e.g. ghcr.io", h)
		}
	}
	if len(nodeWide) > 0 && c.String("docker-config") == "" {
		return agent.Config{}, fmt.Errorf("--node-wide-credentials needs --docker-config: the node's own credentials are what it shares")
	}
	for _, name := range []string{"tag-ttl", "private-access-ttl", "private-offline-window"} {
		if c.Duration(name) < 0 {
			return agent.Config{}, fmt.Errorf("--%s %s: want a duration of zero or more", name, c.Duration(name))
		}
	}
	return agent.Config{
		P2P:             pc,
		DebugListen:     c.String("debug-listen"),
		MetricsListen:   c.String("metrics-listen"),
		Listen:          c.String("listen"),
		DataDir:         c.String("data-dir"),
		Registries:      regs,
		HostedRegistry:  c.String("hosted-registry"),
		DockerConfig:    c.String("docker-config"),
		TagTTL:          c.Duration("tag-ttl"),
		StoreMaxBytes:   int64(maxStore),
		ChunkSize:       int64(chunkSize),
		PieceSize:       int64(pieceSize),
		MaxDownloadRate: int64(rates[0]),
		MaxUploadRate:   int64(rates[1]),
		AdminToken:      token,
		AllowedHosts:    c.StringSlice("allowed-host"),
		TLSCertFile:     c.String("tls-cert"),
		TLSKeyFile:      c.String("tls-key"),
		Logger:          log,

		MaxCoordinatedFetches: c.Int("max-coordinated-fetches"),
		FirstByteTimeout:      c.Duration("first-byte-timeout"),
		WriteStallTimeout:     c.Duration("write-stall-timeout"),
		MaxConnections:        c.Int("max-connections"),

		NodeWideCredentials:  nodeWide,
		PrivateAccessTTL:     c.Duration("private-access-ttl"),
		PrivateOfflineWindow: c.Duration("private-offline-window"),
	}, nil
}

// checkConfigFlag makes agent and seed stop once their flags and the files they name (keys,
// tokens, credentials) are read and checked: a deployment's arguments can be tried without
// starting a node (the Helm chart's tests run every rendered container's arguments this way).
var checkConfigFlag = &cli.BoolFlag{Name: "check-config",
	Usage: "check the flags and the files they name (keys, tokens), then exit without starting"}

// checkListenAddr checks a host:port listen address without opening it: every flag is checked
// before the node creates or opens anything. An empty optional address is off.
func checkListenAddr(flag, addr string, required bool) error {
	if addr == "" && !required {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s %q: want HOST:PORT, e.g. 127.0.0.1:5000: %w", flag, addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("--%s %q: bad port: want 0 to 65535", flag, addr)
	}
	if host != "" && !httpguard.ValidName(host) {
		return fmt.Errorf("--%s %q: bad host: want an IP address or a host name", flag, addr)
	}
	return nil
}

// checkTLSFiles loads the certificate and key the node will serve, so that a missing or
// mismatched file is reported before the node starts.
func checkTLSFiles(cert, key string) error {
	switch {
	case cert == "" && key == "":
		return nil
	case cert == "" || key == "":
		return errors.New("--tls-cert and --tls-key go together: give both, or neither")
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		return fmt.Errorf("--tls-cert %s, --tls-key %s: %w", cert, key, err)
	}
	return nil
}

// checkOpen refuses a peer listener beyond loopback with neither a swarm key nor an allowlist,
// saying how to make one.
func checkOpen(pc *p2p.Config) error {
	var listen []ma.Multiaddr
	for _, s := range pc.ListenAddrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("--p2p-listen %q: %w", s, err)
		}
		listen = append(listen, a)
	}
	if err := admission.CheckOpen(listen, pc.SwarmKey != nil, len(pc.AllowPeers)); err != nil {
		return fmt.Errorf("--p2p-listen: %w.\n"+
			"Any host that reaches the port could join the cluster, read what this node holds and have it fetch from the origin. Either:\n"+
			"  - make a swarm key once with `shoal swarm-key > swarm.key` and give every node --swarm-key swarm.key (SHOAL_SWARM_KEY);\n"+
			"  - or admit listed peers only with --allow-peer <peer ID> (repeatable, SHOAL_ALLOW_PEER=id1,id2; `shoal id --data-dir DIR` prints a node's ID);\n"+
			"  - or listen on loopback only: --p2p-listen /ip4/127.0.0.1/tcp/4001 (or --p2p=false)", err)
	}
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	if w == nil {
		w = os.Stderr
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}
