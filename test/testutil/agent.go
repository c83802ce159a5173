package testutil

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ShoalPackage is the import path of the agent's main package.
const ShoalPackage = "github.com/shoal-oci/shoal/cmd/shoal"

// BinaryEnv names an environment variable that, when set, points at a prebuilt shoal binary to
// test instead of building one: handy when iterating on the tests alone.
const BinaryEnv = "SHOAL_TEST_BINARY"

// BuildShoal builds the shoal binary into dir and returns its path, or returns $SHOAL_TEST_BINARY
// when that is set. When the tests themselves run under the race detector the binary is built with
// -race too, so a data race inside the agent during an end-to-end test fails that test (see
// StartAgent). Test packages call it through LazyBinary, which builds once per package.
func BuildShoal(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", BinaryEnv, err)
		}
		return p, nil
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go toolchain needed to build shoal: %w", err)
	}
	out := filepath.Join(dir, "shoal")
	args := []string{"build", "-o", out}
	if RaceEnabled {
		args = append(args, "-race")
	}
	args = append(args, ShoalPackage)
	if _, err := Run(ctx, gobin, args...); err != nil {
		return "", err
	}
	return out, nil
}

// LazyBinary builds the shoal binary on first use and shares it across a test package's tests, so a
// run whose tests all skip does not pay for the build. Call Remove from TestMain after m.Run.
type LazyBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Path returns the binary, building it into a temporary directory the first time.
func (b *LazyBinary) Path(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "shoal-bin-")
		if b.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		b.path, b.err = BuildShoal(ctx, b.dir)
	})
	if b.err != nil {
		t.Fatalf("building shoal: %v", b.err)
	}
	return b.path
}

// Remove deletes the built binary.
func (b *LazyBinary) Remove() {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// Agent is a running `shoal agent` process.
type Agent struct {
	Addr    string // 127.0.0.1:PORT, what clients are told the mirror is
	URL     string // http://Addr
	DataDir string
	Proc    *Process

	killed atomic.Bool // Kill ended it: its exit is no failure
}

// StartAgent starts `shoal agent` listening on a free 127.0.0.1 port with a fresh data directory
// and the given upstream registries (URLs such as http://127.0.0.1:5000; the first is the
// default), listening for peers on a free port of 127.0.0.1 unless extraArgs pass a --p2p flag,
// and waits until /readyz answers 200 (with --tls-cert in extraArgs, until it listens: URL is
// then https://Addr, and the test brings a client that trusts its CA). The agent is stopped
// with SIGTERM when the test ends; failing to exit cleanly, or a data race report from a -race
// build, fails the test.
func StartAgent(t testing.TB, bin string, registries []string, extraArgs ...string) *Agent {
	t.Helper()
	return StartNode(t, bin, "agent", registries, extraArgs...)
}

// StartSeed is StartAgent for `shoal seed`.
func StartSeed(t testing.TB, bin string, registries []string, extraArgs ...string) *Agent {
	t.Helper()
	return StartNode(t, bin, "seed", registries, extraArgs...)
}

// StartNode starts `shoal COMMAND` (agent or seed) as StartAgent describes. Every node trusts
// the tests' seed authority (SeedAuthority) and every seed signs with it, unless extraArgs
// name --seed-authority or --seed-authority-key.
func StartNode(t testing.TB, bin, command string, registries []string, extraArgs ...string) *Agent {
	t.Helper()
	return StartNodeIn(t, bin, command, FreeAddr(t), t.TempDir(), registries, extraArgs...)
}

// StartNodeIn is StartNode listening on addr with the data directory dataDir, for tests that
// stop or kill a node (Agent.Kill) and start it again on the same address and files.
func StartNodeIn(t testing.TB, bin, command, addr, dataDir string, registries []string, extraArgs ...string) *Agent {
	t.Helper()
	a := &Agent{Addr: addr, DataDir: dataDir}
	a.URL = "http://" + a.Addr
	args := []string{command, "--listen", a.Addr, "--data-dir", a.DataDir, "--log-level", "debug", "--log-format", "json"}
	for _, r := range registries {
		args = append(args, "--registry", r)
	}
	if !slices.ContainsFunc(extraArgs, func(s string) bool { return strings.HasPrefix(s, "--p2p") }) {
		// A peer listener beyond loopback needs a swarm key or an allowlist: keep tests on
		// loopback, where only what the test starts can join.
		args = append(args, "--p2p-listen", "/ip4/127.0.0.1/tcp/0")
	}
	args = append(args, seedAuthorityArgs(t, command, extraArgs)...)
	args = append(args, extraArgs...)
	a.Proc = StartProcess(t, "shoal "+command, bin, args, WithEnv("GORACE=halt_on_error=0"))
	t.Cleanup(func() {
		// Runs before StartProcess's cleanup (cleanups run last-in first-out), so the race check
		// sees the output of a stopped process.
		if err := a.Proc.Stop(); err != nil && !a.killed.Load() {
			t.Errorf("shoal %s did not stop cleanly: %v", command, err)
		}
		if strings.Contains(a.Proc.Output(), "WARNING: DATA RACE") {
			t.Errorf("the race detector found a data race in shoal %s:\n%s", command, raceReports(a.Proc.Output()))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if slices.Contains(extraArgs, "--tls-cert") {
		// HTTPS with the test's own CA: the test waits for /readyz with its client.
		a.URL = "https://" + a.Addr
		if err := WaitListening(ctx, a.Proc, "tcp", a.Addr); err != nil {
			t.Fatalf("shoal %s never listened: %v\n%s", command, err, tail(a.Proc.Output(), 8<<10))
		}
		return a
	}
	if err := WaitHTTP(ctx, a.Proc, a.URL+"/readyz", http.StatusOK); err != nil {
		t.Fatalf("shoal %s never became ready: %v\n%s", command, err, tail(a.Proc.Output(), 8<<10))
	}
	return a
}

func raceReports(out string) string {
	var b strings.Builder
	for _, part := range strings.Split(out, "==================")[1:] {
		if strings.Contains(part, "WARNING: DATA RACE") {
			b.WriteString(part)
			b.WriteString("==================")
		}
	}
	return tail(b.String(), 32<<10)
}

// BlobPath is where the agent commits content with the given digest ("sha256:<hex>").
func (a *Agent) BlobPath(digest string) string {
	algo, enc, _ := strings.Cut(digest, ":")
	return filepath.Join(a.DataDir, "blobs", algo, enc)
}

// Committed reports which of the digests are missing from the agent's data directory and which
// are present but do not hash to their name.
func (a *Agent) Committed(digests ...string) (missing, corrupt []string, err error) {
	for _, d := range digests {
		algo, enc, ok := strings.Cut(d, ":")
		if !ok || algo != "sha256" {
			return nil, nil, fmt.Errorf("unsupported digest %q", d)
		}
		f, err := os.Open(a.BlobPath(d))
		if errors.Is(err, os.ErrNotExist) {
			missing = append(missing, d)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		_ = f.Close()
		if err != nil {
			return nil, nil, err
		}
		if hex.EncodeToString(h.Sum(nil)) != enc {
			corrupt = append(corrupt, d)
		}
	}
	return missing, corrupt, nil
}

// Metrics fetches and parses the agent's /metrics.
func (a *Agent) Metrics(ctx context.Context) ([]Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// CommitWait bounds how long RequireServed waits for content a client has received to be
// committed in the agent's store.
const CommitWait = 15 * time.Second

// RequestsMetric is the agent's counter of /v2 requests, labelled endpoint, method and code.
const RequestsMetric = "shoal_http_requests_total"

// ServedOK returns how many GET requests the agent answered 200 for an endpoint ("manifest",
// "blob"), and whether the agent exports RequestsMetric at all. The status label is "code" in
// the agent today; "status" is accepted too.
func ServedOK(samples []Sample, endpoint string) (float64, bool) {
	var total float64
	found := false
	for _, label := range []string{"code", "status"} {
		n, ok := Sum(samples, RequestsMetric, map[string]string{"endpoint": endpoint, "method": "GET", label: "200"})
		found = found || ok
		total += n
	}
	return total, found
}

// RequireServed proves the agent, and not the origin the client could have fallen back to,
// served a pull: every digest (manifests, configs and layers the client needed) must be committed
// in the agent's data directory with the right bytes, and, when the agent exports
// RequestsMetric, it must have answered at least minManifests manifest GETs and minBlobs blob
// GETs with 200. Clients fall back to the origin when a mirror fails, so a pull that succeeded
// proves nothing by itself. Commits may trail the response by a moment; it waits up to CommitWait.
func (a *Agent) RequireServed(ctx context.Context, t testing.TB, minManifests, minBlobs int, digests ...string) {
	t.Helper()
	// The agent streams a blob to the client while it fetches it and commits it when the fetch
	// completes, which can be a moment after the client has its last byte: poll for the commit.
	waitCtx, cancel := context.WithTimeout(ctx, CommitWait)
	defer cancel()
	for {
		missing, corrupt, err := a.Committed(digests...)
		if err != nil {
			t.Fatalf("checking the agent's data dir: %v", err)
		}
		if len(missing) == 0 && len(corrupt) == 0 {
			break
		}
		if len(corrupt) > 0 || waitCtx.Err() != nil {
			t.Errorf("content the client pulled is not committed in the agent's data dir %s (waited up to %s): missing %v, corrupt %v; present: %v",
				a.DataDir, CommitWait, missing, corrupt, a.listBlobs())
			break
		}
		select {
		case <-waitCtx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	samples, err := a.Metrics(ctx)
	if err != nil {
		t.Errorf("reading agent metrics: %v", err)
		return
	}
	manifests, found := ServedOK(samples, "manifest")
	if !found {
		t.Logf("agent exports no %s; relying on its data dir alone", RequestsMetric)
		return
	}
	blobs, _ := ServedOK(samples, "blob")
	if manifests < float64(minManifests) || blobs < float64(minBlobs) {
		t.Errorf("agent answered %v manifest and %v blob GETs with 200, want at least %d and %d; requests seen:\n%s",
			manifests, blobs, minManifests, minBlobs, formatSamples(samples, RequestsMetric))
	}
}

func (a *Agent) listBlobs() []string {
	var out []string
	_ = filepath.WalkDir(filepath.Join(a.DataDir, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, filepath.Base(filepath.Dir(p))+":"+d.Name())
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func formatSamples(samples []Sample, name string) string {
	var lines []string
	for _, s := range samples {
		if s.Name != name {
			continue
		}
		keys := make([]string, 0, len(s.Labels))
		for k := range s.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, fmt.Sprintf("%s=%q", k, s.Labels[k]))
		}
		lines = append(lines, fmt.Sprintf("  %s{%s} %v", s.Name, strings.Join(kv, ","), s.Value))
	}
	return strings.Join(lines, "\n")
}
