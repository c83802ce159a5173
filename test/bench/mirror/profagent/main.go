// Command profagent is the shoal agent with a profiling listener, for `go run ./test/bench/mirror
// -pprof DIR`. It runs the same agent package as `shoal agent` (same serving code, same store)
// with the flags the benchmark uses, plus --debug-listen, where it serves net/http/pprof and
//
//	POST /debug/cpu/start   start a CPU profile
//	POST /debug/cpu/stop    stop it and answer with the profile
//
// so that a profile covers exactly one scenario. It is a benchmarking aid, not a product binary.
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
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "agent" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("profagent", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:5000", "agent address")
	dataDir := fs.String("data-dir", "", "data directory")
	var registries stringList
	fs.Var(&registries, "registry", "upstream registry URL (repeatable)")
	logLevel := fs.String("log-level", "warn", "log level")
	debug := fs.String("debug-listen", "127.0.0.1:6060", "pprof address")
	_ = fs.Parse(args)

	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	a, err := agent.New(agent.Config{Listen: *listen, DataDir: *dataDir, Registries: registries, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}

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
