package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/agent/store/verify"
	"github.com/shoal-oci/shoal/test/testutil"
)

// seededRand returns the test's random source and logs its seed; SHOAL_CHAOS_SEED replays one.
func seededRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SHOAL_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SHOAL_CHAOS_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("random seed %d (replay with SHOAL_CHAOS_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x5eed))
}

// requestTimeout bounds every request a test client makes: a node that neither answers nor
// fails within it has hung.
const requestTimeout = 60 * time.Second

// tally is what the clients saw: complete responses whose bytes did not match their digest are
// the failure the tests exist to catch; the rest is logged.
type tally struct {
	mu       sync.Mutex
	wrong    []string
	complete int
	broken   int
}

func (c *tally) add(complete bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if complete {
		c.complete++
	} else {
		c.broken++
	}
}

func (c *tally) wrongBytes(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wrong = append(c.wrong, fmt.Sprintf(format, args...))
}

// get fetches url and checks a complete answer against want (a sha256 digest). It returns an
// error for anything but a complete 200 with the right bytes; wrong bytes in a complete answer
// are also recorded in c.
func (c *tally) get(ctx context.Context, url, accept, want string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.add(false)
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.add(false)
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil || (resp.ContentLength >= 0 && n != resp.ContentLength) {
		// Cut short (a node killed, a fetch failing verification): the client's own check
		// would refuse it; what matters is that a whole answer is never wrong.
		c.add(false)
		return fmt.Errorf("GET %s: %d of %d bytes: %v", url, n, resp.ContentLength, err)
	}
	c.add(true)
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
		c.wrongBytes("GET %s answered %d bytes hashing to %s", url, n, got)
		return fmt.Errorf("GET %s: wrong bytes (%s)", url, got)
	}
	return nil
}

const manifestAccept = "application/vnd.oci.image.manifest.v1+json"

// pull fetches an image through a node's /v2, as a runtime would: its manifest by tag, then
// every blob, each checked against its digest. ns names the registry ("" for none).
func (c *tally) pull(ctx context.Context, base, ns, repo, tag string, img testutil.Content) error {
	q := ""
	if ns != "" {
		q = "?ns=" + ns
	}
	if err := c.get(ctx, base+"/v2/"+repo+"/manifests/"+tag+q, manifestAccept, img.Manifest); err != nil {
		return err
	}
	for _, d := range img.Blobs {
		if err := c.get(ctx, base+"/v2/"+repo+"/blobs/"+d+q, "", d); err != nil {
			return err
		}
	}
	return nil
}

// verifyStore runs `shoal store verify --json` on a stopped node's data directory and fails the
// test unless every committed object verifies.
func verifyStore(ctx context.Context, t *testing.T, bin, dir string) *verify.Report {
	t.Helper()
	out, err := testutil.Run(ctx, bin, "store", "verify", "--data-dir", dir, "--json")
	var rep verify.Report
	if derr := json.NewDecoder(strings.NewReader(out)).Decode(&rep); derr != nil {
		t.Fatalf("shoal store verify %s: %v; its output is no report (%v):\n%s", dir, err, derr, out)
	}
	if err != nil || !rep.OK() {
		t.Errorf("shoal store verify %s: %v: %d bad objects:\n%s", dir, err, rep.Bad, out)
	}
	return &rep
}
