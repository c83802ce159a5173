package access

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// fakeOrigin answers like a registry with Basic auth on private repositories: good is the one
// credential it accepts, lists the digests each repository lists. down makes it unreachable.
type fakeOrigin struct {
	mu      sync.Mutex
	private map[string]bool
	good    string
	lists   map[string][]digest.Digest
	down    bool
	checks  int
	probes  int
}

const challenge = `Basic realm="test"`

func (f *fakeOrigin) Probe(_ context.Context, _ *origin.Registry, repo string) (origin.Privacy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes++
	if f.down {
		return origin.Privacy{}, fmt.Errorf("down: %w", errdefs.ErrUnavailable)
	}
	if f.private[repo] {
		return origin.Privacy{Private: true, Challenge: challenge}, nil
	}
	return origin.Privacy{}, nil
}

func (f *fakeOrigin) Check(_ context.Context, _ *origin.Registry, repo string, obj origin.Object, cred credential.Credential) (int, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks++
	if f.down {
		return 0, "", fmt.Errorf("down: %w", errdefs.ErrUnavailable)
	}
	if f.private[repo] && cred.Header() != f.good {
		return http.StatusUnauthorized, challenge, nil
	}
	for _, d := range f.lists[repo] {
		if obj == origin.BlobObject(d) || obj == origin.ManifestObject(d.String()) {
			return http.StatusOK, "", nil
		}
	}
	if obj == origin.ManifestObject("v1") || obj == origin.TagsObject() {
		return http.StatusOK, "", nil
	}
	return http.StatusNotFound, "", nil
}

func (f *fakeOrigin) Ping(context.Context, *origin.Registry) (int, string, error) {
	return http.StatusOK, "", nil
}

func (f *fakeOrigin) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakeOrigin) count() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checks, f.probes
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var (
	layerA = digest.FromString("a")
	layerB = digest.FromString("b")
)

func setup(t *testing.T, cfg Config) (*Checker, *fakeOrigin, *clock, *origin.Registry) {
	t.Helper()
	reg, err := origin.ParseRegistry("http://registry.test:5000")
	if err != nil {
		t.Fatal(err)
	}
	ups, err := origin.NewSet([]string{"http://registry.test:5000"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeOrigin{private: map[string]bool{"team/a": true, "team/b": true}, good: "Basic Z29vZDpnb29k",
		lists: map[string][]digest.Digest{"team/a": {layerA}, "team/b": {layerB}, "pub/app": {layerA}}}
	clk := &clock{now: time.Unix(1_000_000, 0)}
	c, err := New(Deps{Origin: f, Upstreams: ups, Now: clk.Now}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, f, clk, reg
}

func TestAuthorize(t *testing.T) {
	good := credential.FromHeader("Basic Z29vZDpnb29k")
	bad := credential.FromHeader("Basic YmFkOmJhZA==")
	c, f, clk, reg := setup(t, Config{TTL: time.Minute, OfflineWindow: 15 * time.Minute, NodeWide: []string{"other.test"}})
	ctx := context.Background()
	blob := func(repo string, d digest.Digest, cred credential.Credential) Request {
		return Request{Registry: reg, Repo: repo, Kind: Blob, Digest: d, Credential: cred, Local: true}
	}
	var refusal *credential.Refusal

	// No credential, a wrong one: refused with the origin's challenge.
	if err := c.Authorize(ctx, blob("team/a", layerA, credential.Credential{})); !errors.As(err, &refusal) || refusal.Challenge != challenge {
		t.Fatalf("no credential: %v", err)
	}
	if err := c.Authorize(ctx, blob("team/a", layerA, bad)); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("bad credential: %v", err)
	}
	// Accepted, then cached for the TTL: no more origin requests.
	if err := c.Authorize(ctx, blob("team/a", layerA, good)); err != nil {
		t.Fatalf("good credential: %v", err)
	}
	before, _ := f.count()
	for range 5 {
		if err := c.Authorize(ctx, blob("team/a", layerA, good)); err != nil {
			t.Fatal(err)
		}
	}
	if after, _ := f.count(); after != before {
		t.Fatalf("%d origin checks within the TTL, want 0", after-before)
	}
	// The membership trap: a good credential for team/a does not unlock team/b's layer.
	if err := c.Authorize(ctx, blob("team/a", layerB, good)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("team/b's layer under team/a: %v, want not found", err)
	}
	// Under a public name, a digest known only as a private repository's needs the public
	// repository to list it: pub/app lists layerA, not layerB.
	if err := c.Authorize(ctx, blob("pub/app", layerA, credential.Credential{})); err != nil {
		t.Fatalf("pub/app lists layerA: %v", err)
	}
	c.Records().Record(Repository{Registry: reg.Host(), Repo: "team/b"}, layerB)
	if err := c.Authorize(ctx, blob("pub/app", layerB, credential.Credential{})); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("team/b's layer under pub/app: %v, want not found", err)
	}
	if err := c.Unnamed(ctx, layerB); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("team/b's layer under no repository: %v, want refused", err)
	}
	if err := c.Unnamed(ctx, digest.FromString("unknown")); err != nil {
		t.Fatalf("a digest of unknown provenance under no repository: %v", err)
	}

	// Past the TTL the origin is asked again; while it is down, the credential it accepted
	// within the window is served, an unverified one is not, and past the window neither.
	clk.add(2 * time.Minute)
	f.set(func() { f.down = true })
	if err := c.Authorize(ctx, blob("team/a", layerA, good)); err != nil {
		t.Fatalf("origin down, verified 2 minutes ago: %v", err)
	}
	other := credential.FromHeader("Basic b3RoZXI6b3RoZXI=")
	if err := c.Authorize(ctx, blob("team/a", layerA, other)); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("origin down, never verified: %v, want unavailable", err)
	}
	if err := c.Authorize(ctx, blob("team/a", layerA, credential.Credential{})); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("origin down, no credential: %v, want refused", err)
	}
	clk.add(20 * time.Minute)
	if err := c.Authorize(ctx, blob("team/a", layerA, good)); err == nil {
		t.Fatal("origin down, verified 22 minutes ago (window 15): served")
	}
}

func TestNodeWideIsLocalOnly(t *testing.T) {
	c, _, _, reg := setup(t, Config{NodeWide: []string{"REGISTRY.test:5000"}})
	q := Request{Registry: reg, Repo: "team/a", Kind: Manifest, Tag: "v1", Local: true}
	if err := c.Authorize(context.Background(), q); err != nil {
		t.Fatalf("local client, node-wide registry: %v", err)
	}
	q.Local = false
	if err := c.Authorize(context.Background(), q); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("peer, node-wide registry: %v, want refused", err)
	}
}

// Decisions are bounded in number, whatever the number of credentials presented.
func TestDecisionsAreBounded(t *testing.T) {
	c, f, _, reg := setup(t, Config{MaxEntries: 8})
	for i := range 100 {
		cred := credential.FromHeader(fmt.Sprintf("Basic user%d", i))
		f.set(func() { f.good = cred.Header() })
		if err := c.Authorize(context.Background(), Request{Registry: reg, Repo: "team/a", Kind: Listing, Credential: cred}); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.accepted.len(); n > 8 {
		t.Fatalf("%d cached decisions, want at most 8", n)
	}
}

// A node restarted while the origin is down still knows which repositories are private; one it
// never found private is public, as before.
func TestPrivateRepositoriesSurviveRestarts(t *testing.T) {
	state := filepath.Join(t.TempDir(), "private-repos.json")
	c, _, _, reg := setup(t, Config{StateFile: state})
	if p, err := c.Private(context.Background(), reg, "team/a"); err != nil || !p {
		t.Fatalf("team/a: %v %v", p, err)
	}
	b, err := os.ReadFile(state)
	if err != nil || !strings.Contains(string(b), "team/a") {
		t.Fatalf("state file: %s %v", b, err)
	}
	c2, f2, _, _ := setup(t, Config{StateFile: state})
	f2.set(func() { f2.down = true })
	if p, err := c2.Private(context.Background(), reg, "team/a"); err != nil || !p {
		t.Fatalf("after a restart with the origin down, team/a: private %v, %v", p, err)
	}
	if p, err := c2.Private(context.Background(), reg, "pub/app"); err != nil || p {
		t.Fatalf("after a restart with the origin down, pub/app: private %v, %v", p, err)
	}
	// A failed probe is not repeated for every request of an outage.
	_, before := f2.count()
	for range 10 {
		_, _ = c2.Private(context.Background(), reg, "pub/app")
	}
	if _, after := f2.count(); after != before {
		t.Fatalf("%d probes of an unreachable origin within %s, want none", after-before, probeRetry)
	}
}
