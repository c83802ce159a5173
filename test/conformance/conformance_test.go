// Package conformance runs the OCI distribution-spec conformance suite: in its read-only mode
// against a real `shoal agent` process mirroring a seeded origin, and in full (push, content
// management, referrers, sha512) against a real `shoal seed` process with no origin.
//
// The origin is ggcr's registry (pkg/registry) served in-process by httptest: it needs no
// installed program (the suite and the agent are the only moving parts, so this test runs wherever
// they do), it supports tag listing with ?last= and the referrers API that the suite exercises,
// and the test can count the requests the agent makes to it, which is how the warm run below
// proves the agent serves committed content from its store. docker-registry as an origin is
// covered by test/realclient.
package conformance

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoal-oci/shoal/test/testutil"
)

var shoal testutil.LazyBinary

func TestMain(m *testing.M) {
	code := m.Run()
	shoal.Remove()
	os.Exit(code)
}

// conformanceModule is the suite's version; .ci/run installs the same one.
const conformanceModule = "github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111"

const (
	repo1 = "conformance/readonly"
	repo2 = "conformance/other"
)

// origin is an in-process registry that counts the blob GETs it answers.
type origin struct {
	host     string // 127.0.0.1:PORT
	url      string
	blobGETs atomic.Int64
}

func startOrigin(t *testing.T) *origin {
	o := &origin{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			o.blobGETs.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	o.url = srv.URL
	o.host = strings.TrimPrefix(srv.URL, "http://")
	return o
}

// seeded is what the suite is told to check, all in repo1.
type seeded struct {
	tags      []string
	manifests []string
	blobs     []string
	referrers []string // subjects whose referrers list the suite fetches
}

// seed pushes a tagged OCI image, a tagged two-platform index, and an artifact whose subject is
// the image, and returns every tag, manifest and blob among them.
func seed(ctx context.Context, t *testing.T, o *origin) seeded {
	t.Helper()
	var s seeded
	ref := func(r string) string { return o.host + "/" + repo1 + r }

	img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 2, 256<<10)
	testutil.Push(ctx, t, ref(":v1"), img)
	c := testutil.ImageContent(t, img)
	s.tags = append(s.tags, "v1")
	s.manifests = append(s.manifests, c.Manifest)
	s.blobs = append(s.blobs, c.Blobs...)

	idx := testutil.NewIndex(t, 2, 128<<10, testutil.Linux("amd64"), testutil.Linux("arm64"))
	testutil.Push(ctx, t, ref(":multi"), idx)
	idxDigest, platforms := testutil.IndexContent(t, idx)
	s.tags = append(s.tags, "multi")
	s.manifests = append(s.manifests, idxDigest)
	for _, pc := range platforms {
		s.manifests = append(s.manifests, pc.Manifest)
		s.blobs = append(s.blobs, pc.Blobs...)
	}

	// An SBOM-like artifact that refers to the image, pushed by digest.
	subject, err := partialDescriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	art := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	art = mutate.ConfigMediaType(art, "application/vnd.example.sbom.config.v1+json")
	art, err = mutate.AppendLayers(art, static.NewLayer([]byte(`{"sbom":"example"}`), "application/vnd.example.sbom+json"))
	if err != nil {
		t.Fatal(err)
	}
	artImg, ok := mutate.Subject(art, subject).(v1.Image)
	if !ok {
		t.Fatal("mutate.Subject of an image is not an image")
	}
	artDigest, err := artImg.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d, err := name.NewDigest(ref("@"+artDigest.String()), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(d, artImg, remote.WithContext(ctx)); err != nil {
		t.Fatalf("pushing the artifact: %v", err)
	}
	ac := testutil.ImageContent(t, artImg)
	s.manifests = append(s.manifests, ac.Manifest)
	s.blobs = append(s.blobs, ac.Blobs...)
	s.referrers = append(s.referrers, c.Manifest)
	return s
}

func partialDescriptor(img v1.Image) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	size, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: size}, nil
}

// TestReadOnlyConformance runs the suite's read-only workflow against the agent twice: cold,
// when every answer needs the origin, and warm, when blobs must come from the agent's store.
func TestReadOnlyConformance(t *testing.T) {
	suite := conformanceBinary(t)
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	o := startOrigin(t)
	content := seed(ctx, t, o)
	agent := testutil.StartAgent(t, bin, []string{o.url})

	// Each tag and manifest is checked with HEAD and GET, each blob likewise, plus one tag list and
	// one referrers list per subject: the suite must have run exactly these and passed them all.
	want := 2*(len(content.tags)+len(content.manifests)+len(content.blobs)) + 1 + len(content.referrers)

	t.Run("cold", func(t *testing.T) {
		runSuite(ctx, t, suite, agent, content, want)
		agent.RequireServed(ctx, t, 1, 1, append(content.manifests, content.blobs...)...)
	})
	t.Run("warm", func(t *testing.T) {
		before := o.blobGETs.Load()
		runSuite(ctx, t, suite, agent, content, want)
		if n := o.blobGETs.Load() - before; n != 0 {
			t.Errorf("the agent fetched %d blobs from the origin again although all were committed in its store", n)
		}
	})
}

// runSuite runs the conformance binary against the agent and fails t unless it exits 0 and its
// junit.xml shows exactly want tests, all passed.
func runSuite(ctx context.Context, t *testing.T, suite string, agent *testutil.Agent, s seeded, want int) {
	t.Helper()
	results := t.TempDir()
	env := []string{
		"OCI_REGISTRY=" + agent.Addr,
		"OCI_TLS=disabled",
		"OCI_REPO1=" + repo1,
		"OCI_REPO2=" + repo2,
		"OCI_API_PUSH=false",
		"OCI_API_BLOBS_DELETE=false",
		"OCI_API_MANIFESTS_DELETE=false",
		"OCI_API_TAGS_DELETE=false",
		"OCI_RO_DATA_TAGS=" + strings.Join(s.tags, " "),
		"OCI_RO_DATA_MANIFESTS=" + strings.Join(s.manifests, " "),
		"OCI_RO_DATA_BLOBS=" + strings.Join(s.blobs, " "),
		"OCI_RO_DATA_REFERRERS=" + strings.Join(s.referrers, " "),
		// Without push the suite panics writing its report unless the run is filtered to the
		// read-only workflow.
		"OCI_FILTER_TEST=OCI Conformance Test/read-only",
		"OCI_RESULTS_DIR=" + results,
		"OCI_LOG=warn",
	}
	ju, out, _ := runConformance(ctx, t, suite, env, results)
	passed := ju.count("passed")
	if ju.Tests == 0 || passed == 0 {
		t.Errorf("conformance suite ran no test (tests=%d passed=%d); report:\n%s", ju.Tests, passed, out)
	} else if passed != want {
		t.Errorf("conformance suite passed %d of %d tests, want %d passed; report:\n%s", passed, ju.Tests, want, out)
	}
	t.Logf("conformance: %d tests, %d passed, %d failures, %d errors, %d skipped, %d disabled (push and delete)",
		ju.Tests, passed, ju.Failures, ju.Errors, ju.Skipped, ju.Disabled)
}

// runConformance runs the conformance suite with env, reports each failed case as a test error (with the
// requests and responses of the first few), and returns the suite's report, its output and how
// it exited.
func runConformance(ctx context.Context, t *testing.T, suite string, env []string, results string) (*junitReport, string, error) {
	t.Helper()
	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, runErr := testutil.RunEnv(runCtx, env, suite)
	ju, err := readJunit(filepath.Join(results, "junit.xml"))
	if err != nil {
		// The suite exits 0 when it cannot load its configuration, so a missing report is a failure.
		t.Fatalf("conformance suite left no usable junit.xml (%v); exit: %v\n%s", err, runErr, out)
	}
	for i, f := range ju.failed() {
		msg := fmt.Sprintf("FAIL %s [%s]\n  %s", f.Name, f.Status, strings.ReplaceAll(strings.TrimSpace(f.SystemOut), "\n", "\n  "))
		if i < 8 { // the requests and responses of the first few are enough to debug from
			msg += "\n" + indent(truncate(f.SystemErr, 4<<10))
		}
		t.Error(msg)
	}
	if runErr != nil {
		t.Errorf("conformance suite failed: %v", runErr)
	}
	return ju, out, runErr
}

// junitReport is the part of the suite's junit.xml this test reads.
type junitReport struct {
	Tests    int `xml:"tests,attr"`
	Failures int `xml:"failures,attr"`
	Errors   int `xml:"errors,attr"`
	Skipped  int `xml:"skipped,attr"`
	Disabled int `xml:"disabled,attr"`
	Suites   []struct {
		Cases []junitCase `xml:"testcase"`
	} `xml:"testsuite"`
}

type junitCase struct {
	Name      string `xml:"name,attr"`
	Status    string `xml:"status,attr"`
	SystemOut string `xml:"system-out"`
	SystemErr string `xml:"system-err"`
}

func readJunit(path string) (*junitReport, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r junitReport
	if err := xml.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return &r, nil
}

func (r *junitReport) count(status string) int {
	n := 0
	for _, s := range r.Suites {
		for _, c := range s.Cases {
			if c.Status == status {
				n++
			}
		}
	}
	return n
}

func (r *junitReport) failed() []junitCase {
	var out []junitCase
	for _, s := range r.Suites {
		for _, c := range s.Cases {
			if c.Status == "failure" || c.Status == "error" {
				out = append(out, c)
			}
		}
	}
	return out
}

// conformanceBinary finds the suite's binary on PATH or where `go install` puts it. It is
// skipped when missing, except under CI.
func conformanceBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("conformance"); err == nil {
		return p
	}
	for _, dir := range goBinDirs() {
		p := filepath.Join(dir, "conformance")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	msg := "the OCI conformance suite is not installed; run: go install " + conformanceModule
	if testutil.InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// goBinDirs lists where `go install` puts binaries: $GOBIN, else $GOPATH/bin for each GOPATH entry.
func goBinDirs() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil
	}
	out, err := testutil.Run(ctx, gobin, "env", "GOBIN", "GOPATH")
	if err != nil {
		return nil
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) > 0 && lines[0] != "" {
		return []string{lines[0]}
	}
	var dirs []string
	if len(lines) > 1 {
		for _, p := range filepath.SplitList(lines[1]) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	return dirs
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "\n[...]"
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}
