// Command benchagent is the shoal agent with peer-to-peer wired from flags, plus an optional
// profiling listener, for `go run ./test/bench/p2p`. It runs the same agent package as `shoal
// agent` (same fetch pipeline, store, p2p node and transfer protocol) and accepts the subset of
// its flags that the benchmark uses:
//
//	benchagent agent --listen ADDR --data-dir DIR --registry URL --p2p-listen MA [--bootstrap MA]
//	    [--log-level warn] [--debug-listen ADDR]
//
// The benchmark uses it for -pprof (CPU profiles that start and stop with one transfer), and
// instead of ./cmd/shoal when a probe shows that `shoal agent` starts no p2p node (as before
// 5bb85f8, when it accepted --p2p-listen and --bootstrap but never put them into agent.Config).
//
// With --debug-listen it serves net/http/pprof there, and
//
//	POST /debug/cpu/start   start a CPU profile
//	POST /debug/cpu/stop    stop it and answer with the profile
//
// so that a profile covers exactly one transfer. It is a benchmarking aid, not a product binary.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/keys"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "id" {
		fs := flag.NewFlagSet("id", flag.ExitOnError)
		dataDir := fs.String("data-dir", "", "data directory")
		_ = fs.Parse(args[1:])
		if err := os.MkdirAll(*dataDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		id, err := keys.PeerIDFromDataDir(*dataDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(id)
		return
	}
	if len(args) > 0 && args[0] == "agent" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("benchagent", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:5000", "agent address")
	dataDir := fs.String("data-dir", "", "data directory")
	var registries, p2pListen, bootstrap stringList
	fs.Var(&registries, "registry", "upstream registry URL (repeatable)")
	fs.Var(&p2pListen, "p2p-listen", "libp2p listen multiaddr (repeatable)")
	fs.Var(&bootstrap, "bootstrap", "bootstrap peer (repeatable)")
	noP2P := fs.Bool("no-p2p", false, "run a plain mirror")
	logLevel := fs.String("log-level", "warn", "log level")
	debug := fs.String("debug-listen", "", "pprof address (empty: none)")
	_ = fs.Parse(args)

	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	cfg := agent.Config{Listen: *listen, DataDir: *dataDir, Registries: registries, Logger: log}
	if !*noP2P {
		cfg.P2P = &p2p.Config{ListenAddrs: p2pListen, Bootstrap: bootstrap}
	}
	a, err := agent.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}

	if *debug != "" {
		var mu sync.Mutex
		var cpu *bytes.Buffer
		http.HandleFunc("POST /debug/cpu/start", func(w http.ResponseWriter, _ *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			if cpu != nil {
				http.Error(w, "already profiling", http.StatusConflict)
				return
			}
			cpu = &bytes.Buffer{}
			if err := pprof.StartCPUProfile(cpu); err != nil {
				cpu = nil
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		})
		http.HandleFunc("POST /debug/cpu/stop", func(w http.ResponseWriter, _ *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			if cpu == nil {
				http.Error(w, "not profiling", http.StatusConflict)
				return
			}
			pprof.StopCPUProfile()
			_, _ = w.Write(cpu.Bytes())
			cpu = nil
		})
		go func() { _ = http.ListenAndServe(*debug, nil) }()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type stringList []string

func (l *stringList) String() string     { return fmt.Sprint(*l) }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
