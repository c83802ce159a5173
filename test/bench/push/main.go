// Command push measures how fast a `shoal seed` accepts a pushed layer, against writing the same
// bytes to a file on the same disk, in the same run.
//
// It writes one random blob of -size bytes under -tmp, starts a seed with no origin on
// 127.0.0.1 (data directory under -tmp too, so both writes hit the same disk), and for each run:
//
//   - file: copies the blob into a new file in the seed's directory in 1 MiB writes, then fsyncs
//     it (what a seed must at least do to keep a pushed layer);
//   - monolithic: one POST ...?digest= carrying the whole blob;
//   - streamed: POST, one PATCH streaming the whole blob, PUT ?digest= (what docker and ggcr do);
//   - chunked: POST, PATCHes of -chunk bytes with Content-Range, PUT ?digest= (what oras and
//     skopeo do for large blobs).
//
// Each push is checked with a HEAD, then the blob is deleted so the next run writes it again.
// The source blob is read from the page cache in every case. It reports the median throughput
// of -runs runs, the seed's CPU seconds per GiB and its peak RSS, writes a Markdown report to
// -out, and prints one JSON object as its last line.
//
// Usage, from the module root:
//
//	go run ./test/bench/push [-size 1GiB] [-runs 3] [-chunk 64MiB] [-out docs/benchmarks-push.md]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/shoal-oci/shoal/agent"

	"github.com/shoal-oci/shoal/test/bench/internal/benchblob"
	"github.com/shoal-oci/shoal/test/bench/internal/benchproc"
)

type config struct {
	size, chunk int64
	args        string // the command line, for the report
	runs        int
	tmp, out    string
	rev         string
}

func main() {
	var cfg config
	size := flag.String("size", "1GiB", "size of the pushed layer")
	chunk := flag.String("chunk", "64MiB", "chunk size of the chunked push")
	flag.IntVar(&cfg.runs, "runs", 3, "runs of every mode (the report gives the median)")
	flag.StringVar(&cfg.tmp, "tmp", "", "directory for the blob and the seed's data (default $TMPDIR)")
	flag.StringVar(&cfg.out, "out", "", "write a Markdown report here")
	flag.StringVar(&cfg.rev, "rev", "", "revision measured, for the report (default: the working tree)")
	flag.Parse()
	cfg.args = strings.Join(os.Args[1:], " ")
	var err error
	if cfg.size, err = parseBytes(*size); err == nil {
		cfg.chunk, err = parseBytes(*chunk)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "push:", err)
		os.Exit(2)
	}
	benchproc.Main("push", func(ctx context.Context) error { return run(ctx, cfg) })
}

func parseBytes(s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("size %q: want a positive size such as 1GiB", s)
	}
	return int64(n), nil
}

type result struct {
	Mode       string  `json:"mode"`
	MBps       float64 `json:"mbPerSecond"` // median
	Seconds    float64 `json:"seconds"`     // median
	CPUPerGiB  float64 `json:"seedCPUSecondsPerGiB,omitempty"`
	Ratio      float64 `json:"ratioToFile"`
	runs       []float64
	cpuSeconds []float64
}

func run(ctx context.Context, cfg config) error {
	dir, err := benchproc.TempDir(cfg.tmp, "shoal-push-bench-", false)
	if err != nil {
		return err
	}
	fmt.Printf("writing a %s random blob under %s\n", humanize.IBytes(uint64(cfg.size)), dir)
	d, err := benchblob.Make(filepath.Join(dir, "src"), cfg.size, 1)
	if err != nil {
		return err
	}
	src := filepath.Join(dir, "src", "sha256", strings.TrimPrefix(d, "sha256:"))
	root, err := benchproc.ModuleRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "shoal")
	if err := (benchproc.Source{Dir: root, Desc: "the working tree"}).Build(ctx, "./cmd/shoal", bin); err != nil {
		return err
	}
	// A seed with no origin, on free loopback ports, authorized as an operator would.
	seedDir := filepath.Join(dir, "seed")
	auth, err := benchproc.NewSeedAuthority(dir)
	if err != nil {
		return err
	}
	s, err := benchproc.Start(ctx, bin, benchproc.Options{Command: "seed", DataDir: seedDir,
		Registries: []string{"none"}, P2P: benchproc.P2PLoopback, Args: auth.Args(true)})
	if err != nil {
		return err
	}
	modes := []string{"file", "monolithic", "streamed", "chunked"}
	results := map[string]*result{}
	for _, m := range modes {
		results[m] = &result{Mode: m}
	}
	for r := range cfg.runs {
		for _, m := range modes {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			cpu0, _ := benchproc.CPUTime(s.Pid())
			start := time.Now()
			switch m {
			case "file":
				err = writeFile(src, filepath.Join(seedDir, "bench-file"))
			default:
				err = push(ctx, s.URL, m, src, d, cfg.size, cfg.chunk)
			}
			took := time.Since(start)
			cpu1, _ := benchproc.CPUTime(s.Pid())
			if err != nil {
				return fmt.Errorf("run %d, %s: %w", r+1, m, err)
			}
			res := results[m]
			res.runs = append(res.runs, took.Seconds())
			res.cpuSeconds = append(res.cpuSeconds, (cpu1 - cpu0).Seconds())
			fmt.Printf("run %d %-10s %6.2f s  %7.1f MB/s  seed CPU %.2f s\n", r+1, m, took.Seconds(),
				float64(cfg.size)/took.Seconds()/1e6, (cpu1 - cpu0).Seconds())
			if m == "file" {
				err = os.Remove(filepath.Join(seedDir, "bench-file"))
			} else {
				err = deleteBlob(ctx, s.URL, d)
			}
			if err != nil {
				return fmt.Errorf("run %d, %s: cleaning up: %w", r+1, m, err)
			}
		}
	}
	rss, _ := benchproc.Status(s.Pid(), "VmHWM")
	gib := float64(cfg.size) / (1 << 30)
	for _, m := range modes {
		res := results[m]
		res.Seconds = median(res.runs)
		res.MBps = float64(cfg.size) / res.Seconds / 1e6
		if m != "file" {
			res.CPUPerGiB = median(res.cpuSeconds) / gib
		}
		res.Ratio = results["file"].Seconds / res.Seconds
	}
	report := renderReport(cfg, results, modes, rss)
	fmt.Print(report)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(report), 0o644); err != nil {
			return err
		}
	}
	var list []*result
	for _, m := range modes {
		list = append(list, results[m])
	}
	b, _ := json.Marshal(map[string]any{"size": cfg.size, "results": list, "seedPeakRSS": rss})
	fmt.Println(string(b))
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// writeFile copies src to dst in 1 MiB writes and fsyncs it.
func writeFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, buf); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// push uploads the blob in one of three ways and checks it with a HEAD.
func push(ctx context.Context, base, mode, src, d string, size, chunk int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	uploads := base + "/v2/bench/layer/blobs/uploads/"
	if mode == "monolithic" {
		resp, err := do(ctx, http.MethodPost, uploads+"?digest="+url.QueryEscape(d), io.NopCloser(f), size, nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return expect(resp, http.StatusCreated, head(ctx, base, d, size))
	}
	resp, err := do(ctx, http.MethodPost, uploads, nil, 0, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if err := expect(resp, http.StatusAccepted, nil); err != nil {
		return err
	}
	loc, err := resolve(base, resp.Header.Get("Location"))
	if err != nil {
		return err
	}
	if mode == "streamed" {
		// No Content-Length: a streamed PATCH, as docker and ggcr send it.
		resp, err = do(ctx, http.MethodPatch, loc, io.NopCloser(f), -1, nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if err := expect(resp, http.StatusAccepted, nil); err != nil {
			return err
		}
		if loc, err = resolve(base, resp.Header.Get("Location")); err != nil {
			return err
		}
	} else {
		for off := int64(0); off < size; off += chunk {
			n := min(chunk, size-off)
			hdr := http.Header{"Content-Range": {fmt.Sprintf("%d-%d", off, off+n-1)}}
			resp, err = do(ctx, http.MethodPatch, loc, io.NopCloser(io.NewSectionReader(f, off, n)), n, hdr)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if err := expect(resp, http.StatusAccepted, nil); err != nil {
				return fmt.Errorf("chunk at %d: %w", off, err)
			}
			if loc, err = resolve(base, resp.Header.Get("Location")); err != nil {
				return err
			}
		}
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	resp, err = do(ctx, http.MethodPut, loc+sep+"digest="+url.QueryEscape(d), nil, 0, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return expect(resp, http.StatusCreated, head(ctx, base, d, size))
}

// head checks the pushed blob as a pull would see it: in the hosted registry's namespace, where
// pushes land.
func head(ctx context.Context, base, d string, size int64) error {
	resp, err := do(ctx, http.MethodHead, base+"/v2/bench/layer/blobs/"+d+"?ns="+agent.DefaultHostedRegistry, nil, 0, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
		return fmt.Errorf("HEAD after the push: %s, %d bytes", resp.Status, resp.ContentLength)
	}
	return nil
}

func deleteBlob(ctx context.Context, base, d string) error {
	resp, err := do(ctx, http.MethodDelete, base+"/v2/bench/layer/blobs/"+d, nil, 0, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return expect(resp, http.StatusAccepted, nil)
}

func do(ctx context.Context, method, u string, body io.ReadCloser, n int64, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = n
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	return http.DefaultClient.Do(req)
}

func expect(resp *http.Response, status int, then error) error {
	if resp.StatusCode != status {
		return fmt.Errorf("%s %s: %s, want %d", resp.Request.Method, resp.Request.URL.Path, resp.Status, status)
	}
	return then
}

func resolve(base, loc string) (string, error) {
	if loc == "" {
		return "", errors.New("no Location in the answer")
	}
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	l, err := url.Parse(loc)
	if err != nil {
		return "", err
	}
	return b.ResolveReference(l).String(), nil
}

func renderReport(cfg config, results map[string]*result, modes []string, rss int64) string {
	var b strings.Builder
	rev := cfg.rev
	if rev == "" {
		rev = "the working tree"
	}
	fmt.Fprintf(&b, "# Push throughput\n\n")
	fmt.Fprintf(&b, "`go run ./test/bench/push %s` (size %s, chunks %s, %d runs), at %s, on %s/%s with %d CPUs, %s.\n\n",
		cfg.args, humanize.IBytes(uint64(cfg.size)), humanize.IBytes(uint64(cfg.chunk)), cfg.runs, rev, runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "One %s layer pushed to a `shoal seed --registry none` on 127.0.0.1, against copying the same bytes\n"+
		"into a file on the same disk and fsyncing it. Medians of %d runs; the source is in the page cache.\n\n",
		humanize.IBytes(uint64(cfg.size)), cfg.runs)
	fmt.Fprintf(&b, "| Mode | Median time | Throughput | vs. file write | Seed CPU s per GiB |\n|---|---:|---:|---:|---:|\n")
	for _, m := range modes {
		r := results[m]
		cpu := "–"
		if m != "file" {
			cpu = fmt.Sprintf("%.2f", r.CPUPerGiB)
		}
		fmt.Fprintf(&b, "| %s | %.2f s | %.0f MB/s | %.2f × | %s |\n", m, r.Seconds, r.MBps, r.Ratio, cpu)
	}
	fmt.Fprintf(&b, "\nSeed peak RSS over the run: %s.\n", humanize.IBytes(uint64(rss)))
	return b.String()
}
