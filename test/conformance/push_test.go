package conformance

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
)

// TestPushConformance runs the whole suite (push, pull, content discovery, content management,
// referrers, sha512, and the 1.1+dev additions: upload cancel, digest headers, tag parameters)
// against a real `shoal seed --registry none` process: the push API of a seed with no upstream.
func TestPushConformance(t *testing.T) {
	suite := conformanceBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	sd := testutil.StartSeed(t, shoal.Path(t), []string{"none"}, "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--log-level", "warn")

	results := t.TempDir()
	if d := os.Getenv("SHOAL_CONFORMANCE_RESULTS"); d != "" {
		results = d // keep report.html and results.yaml to read after the run
	}
	env := []string{
		"OCI_REGISTRY=" + strings.TrimPrefix(sd.URL, "http://"),
		"OCI_TLS=disabled",
		"OCI_REPO1=conformance/push",
		"OCI_REPO2=conformance/mount",
		"OCI_VERSION=1.1+dev",
		"OCI_API_PUSH=true",
		"OCI_API_PULL=true",
		"OCI_API_REFERRER=true",
		"OCI_API_BLOBS_DELETE=true",
		"OCI_API_MANIFESTS_DELETE=true",
		"OCI_API_TAGS_DELETE=true",
		"OCI_API_TAGS_LIST=true",
		"OCI_DATA_SHA512=true",
		"OCI_RESULTS_DIR=" + results,
		"OCI_LOG=warn",
	}
	ju, out, _ := runConformance(ctx, t, suite, env, results)
	failed := ju.failed()
	cases := 0
	for _, s := range ju.Suites {
		for _, c := range s.Cases {
			cases++
			if c.Status != "passed" && c.Status != "failure" && c.Status != "error" {
				t.Errorf("%s [%s]: %s", c.Name, c.Status, strings.TrimSpace(c.SystemOut))
			}
		}
	}
	passed := ju.count("passed")
	if cases == 0 || passed != cases {
		t.Errorf("conformance suite: %d test cases, %d passed, %d failed; report:\n%s", cases, passed, len(failed), out)
	}
	t.Logf("conformance (push): %d test cases, %d passed, %d failures, %d errors, %d skipped (junit tests=%d)",
		cases, passed, ju.Failures, ju.Errors, ju.Skipped, ju.Tests)
}
