package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent"
	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

// privateFixture is an origin that refuses anonymous reads (docker-registry with htpasswd) holding
// two private images, test/private:v1 and test/other:v1, readable by alice and bob alike.
type privateFixture struct {
	origin  *origins.AuthRegistry
	private testutil.Content
	other   testutil.Content
	// blobs holds every blob and manifest body by digest.
	blobs map[string][]byte
}

func newPrivateFixture(t *testing.T) *privateFixture {
	return newPrivateFixtureWith(t, origins.StartAuthDockerRegistry)
}

// newPrivateFixtureWith is newPrivateFixture with the origin start chooses (htpasswd or token auth).
func newPrivateFixtureWith(t *testing.T, start func(testing.TB, map[string]string) *origins.AuthRegistry) *privateFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := start(t, map[string]string{"alice": "alice-secret", "bob": "bob-secret"})
	f := &privateFixture{origin: o, blobs: map[string][]byte{}}
	for _, im := range []struct {
		repo string
		c    *testutil.Content
	}{{"test/private:v1", &f.private}, {"test/other:v1", &f.other}} {
		img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 2, 96<<10)
		o.Push(ctx, t, "alice", im.repo, img)
		*im.c = testutil.ImageContent(t, img)
		raw, _ := img.RawManifest()
		f.blobs[im.c.Manifest] = raw
		for d, b := range testutil.LayerBytes(t, img) {
			f.blobs[d] = b
		}
		cfg, _ := img.RawConfigFile()
		cd, _ := img.ConfigName()
		f.blobs[cd.String()] = cfg
	}
	return f
}

// request sends method path to host with auth as its Authorization header ("" for none).
func request(t *testing.T, method, host, path, auth string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

// paths are every read of test/private:v1 a client makes: the manifest by tag and digest, the
// blobs (GET and HEAD), the tag list and the referrers.
func (f *privateFixture) paths() []string {
	ps := []string{"/v2/test/private/manifests/v1", "/v2/test/private/manifests/" + f.private.Manifest,
		"/v2/test/private/tags/list", "/v2/test/private/referrers/" + f.private.Manifest}
	for _, b := range f.private.Blobs {
		ps = append(ps, "/v2/test/private/blobs/"+b)
	}
	return ps
}

// requireRefused checks that every read of test/private is refused with 401 and the origin's
// challenge relayed, by GET and HEAD.
func (f *privateFixture) requireRefused(t *testing.T, host, auth, when string) {
	t.Helper()
	for _, p := range f.paths() {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			status, h, body := request(t, m, host, p, auth)
			if status != http.StatusUnauthorized {
				t.Errorf("%s: %s %s = %d, want 401 (%.200s)", when, m, p, status, body)
				continue
			}
			if ch := h.Get("WWW-Authenticate"); !strings.Contains(ch, `realm="`+f.origin.Realm+`"`) {
				t.Errorf("%s: %s %s: WWW-Authenticate %q is not the origin's challenge", when, m, p, ch)
			}
			if m == http.MethodGet && !bytes.Contains(body, []byte("UNAUTHORIZED")) {
				t.Errorf("%s: %s %s: body %.200s is not an OCI UNAUTHORIZED error", when, m, p, body)
			}
		}
	}
}

// requireServed pulls test/private:v1 with auth and checks every byte.
func (f *privateFixture) requireServed(t *testing.T, host, auth, when string) {
	t.Helper()
	status, _, body := request(t, http.MethodGet, host, "/v2/test/private/manifests/v1", auth)
	if status != http.StatusOK || digest.FromBytes(body).String() != f.private.Manifest {
		t.Fatalf("%s: manifest by tag: %d %.200s", when, status, body)
	}
	for _, b := range f.private.Blobs {
		status, _, body := request(t, http.MethodGet, host, "/v2/test/private/blobs/"+b, auth)
		if status != http.StatusOK || !bytes.Equal(body, f.blobs[b]) {
			t.Fatalf("%s: blob %s: %d (%d bytes)", when, b, status, len(body))
		}
	}
}

// A node holding credentials for a private repository serves it to local clients only with
// credentials the origin accepts: without any, or with wrong ones, every read (manifests by tag
// and digest, blobs, tags, referrers) is refused with the origin's challenge, before and after
// the content is in its store. A credential for the repository does not unlock a blob that only
// another private repository lists. Node-wide credentials serve every local client.
func TestPrivateRepositoryLocalClients(t *testing.T) {
	f := newPrivateFixture(t)
	nd := startAgentConfig(t, agent.Config{DataDir: t.TempDir(), Registries: []string{f.origin.URL},
		DockerConfig: f.origin.DockerConfig(t, "alice")})
	alice, bob := f.origin.Auth("alice"), f.origin.Auth("bob")
	wrong := "Basic " + strings.Repeat("QQ", 8)

	f.requireRefused(t, nd.host, "", "cold, no credential")
	f.requireRefused(t, nd.host, wrong, "cold, wrong credential")
	f.requireServed(t, nd.host, alice, "alice")
	f.requireRefused(t, nd.host, "", "warm, no credential")
	f.requireRefused(t, nd.host, wrong, "warm, wrong credential")
	f.requireServed(t, nd.host, bob, "bob, warm") // another user the origin accepts

	// The membership trap: test/other's layer is in the store, and alice may read test/private,
	// but test/private does not list it.
	status, _, body := request(t, http.MethodGet, nd.host, "/v2/test/other/manifests/v1", alice)
	if status != http.StatusOK {
		t.Fatalf("test/other: %d %.200s", status, body)
	}
	for _, b := range f.other.Blobs {
		if status, _, _ := request(t, http.MethodGet, nd.host, "/v2/test/other/blobs/"+b, alice); status != http.StatusOK {
			t.Fatalf("test/other blob: %d", status)
		}
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			if status, _, _ := request(t, m, nd.host, "/v2/test/private/blobs/"+b, alice); status != http.StatusNotFound {
				t.Errorf("%s of test/other's blob under test/private with alice's credential: %d, want 404", m, status)
			}
		}
	}
	if status, _, _ := request(t, http.MethodGet, nd.host, "/v2/test/private/manifests/"+f.other.Manifest, alice); status != http.StatusNotFound {
		t.Errorf("test/other's manifest under test/private: %d, want 404", status)
	}

	// Node-wide: the operator declared the node's own credentials good for every local client.
	wide := startAgentConfig(t, agent.Config{DataDir: t.TempDir(), Registries: []string{f.origin.URL},
		DockerConfig: f.origin.DockerConfig(t, "alice"), NodeWideCredentials: []string{f.origin.Addr}})
	f.requireServed(t, wide.host, "", "node-wide, no credential")
}

// peerClient is a real libp2p host in the cluster that speaks the content protocol as a peer
// without credentials would, naming whatever repository and credential it likes.
func peerClient(t *testing.T, bootstrap []string, target *node) (*transfer.Client, peer.ID) {
	t.Helper()
	probe := startTestPeer(t, transfer.NewMemoryContent(), bootstrap...)
	var addrs []multiaddr.Multiaddr
	for _, s := range target.Node().Addrs() {
		ma, _ := multiaddr.NewMultiaddr(s)
		if pi, err := peer.AddrInfoFromP2pAddr(ma); err == nil {
			addrs = append(addrs, pi.Addrs...)
		}
	}
	if err := probe.Host().Connect(context.Background(), peer.AddrInfo{ID: target.Node().ID(), Addrs: addrs}); err != nil {
		t.Fatal(err)
	}
	return transfer.NewClient(probe.Host()), target.Node().ID()
}

// as is a context naming repo of the origin with auth, as a requesting node forwards it.
func as(f *privateFixture, repo, auth string) context.Context {
	return credential.NewContext(context.Background(), credential.Access{Registry: f.origin.Addr, Repo: repo,
		Credential: credential.FromHeader(auth)})
}

// Peers get a private repository's content only with a credential its origin accepts for that
// repository: a node without credentials, its local clients, and a peer speaking the protocol
// directly are refused a holder's private content by tag and by digest, and through the
// coordinator operations (resolve, pull); a client with a credential is served through a node
// that has none, its credential forwarded to the holder. With the origin down, a credential the
// holder verified recently still works, and one it never verified is refused.
func TestPrivateRepositoryPeers(t *testing.T) {
	f := newPrivateFixture(t)
	cfg := func(dir, dockerConfig string, boot []string) agent.Config {
		return agent.Config{DataDir: dir, Registries: []string{f.origin.URL}, DockerConfig: dockerConfig, ChunkSize: 64 << 10,
			P2P: &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: boot}}
	}
	hc := cfg(t.TempDir(), f.origin.DockerConfig(t, "alice"), nil)
	// Every request asks the origin again, so that with the origin down the holder answers from
	// the offline window, not from a decision still fresh.
	hc.PrivateAccessTTL = time.Nanosecond
	holder := startAgentConfig(t, hc)
	bare := startAgentConfig(t, cfg(t.TempDir(), "", holder.Node().Addrs()))
	alice, bob := f.origin.Auth("alice"), f.origin.Auth("bob")

	f.requireRefused(t, bare.host, "", "credential-less node, cold")
	f.requireServed(t, holder.host, alice, "alice at the holder")
	waitProvided(t, bare, append([]string{f.private.Manifest}, f.private.Blobs...)...)
	f.requireRefused(t, bare.host, "", "credential-less node, the holder warm")

	// A peer speaking the protocol: the holder refuses it every private digest and operation
	// without a credential the origin accepts for the repository it names.
	tc, hid := peerClient(t, holder.Node().Addrs(), holder)
	layer := digest.Digest(f.private.Blobs[len(f.private.Blobs)-1])
	for _, tt := range []struct {
		name string
		ctx  context.Context
	}{
		{"no repository", context.Background()},
		{"no credential", as(f, "test/private", "")},
		{"wrong credential", as(f, "test/private", "Basic "+strings.Repeat("QQ", 8))},
	} {
		if _, err := tc.Get(tt.ctx, hid, layer, 0, -1); err == nil {
			t.Errorf("%s: get of a private layer served", tt.name)
		}
		if _, err := tc.Get(tt.ctx, hid, digest.Digest(f.private.Manifest), 0, -1); err == nil {
			t.Errorf("%s: get of a private manifest served", tt.name)
		}
		if _, err := tc.Map(tt.ctx, hid, layer, 64<<10); err == nil {
			t.Errorf("%s: chunk map of a private layer served", tt.name)
		}
		if tt.name == "no repository" {
			continue
		}
		if _, err := tc.Resolve(tt.ctx, hid, f.origin.Addr, "test/private", "v1", nil); !errors.Is(err, errdefs.ErrUnauthorized) {
			t.Errorf("%s: resolve of a private tag: %v, want refused", tt.name, err)
		}
		if recs, err := tc.Tags(tt.ctx, hid, f.origin.Addr, "test/private", "v1"); !errors.Is(err, errdefs.ErrUnauthorized) {
			t.Errorf("%s: tag records of a private tag: %v %v, want refused", tt.name, recs, err)
		}
		if err := tc.Pull(tt.ctx, hid, f.origin.Addr, "test/private", layer); !errors.Is(err, errdefs.ErrUnauthorized) {
			t.Errorf("%s: pull of a private layer: %v, want refused", tt.name, err)
		}
	}
	// With alice's credential the holder serves; test/other's layer under test/private it does not.
	rng, err := tc.Get(as(f, "test/private", alice), hid, layer, 0, -1)
	if err != nil {
		t.Fatalf("get with alice's credential: %v", err)
	}
	got, _ := io.ReadAll(rng)
	rng.Close()
	if !bytes.Equal(got, f.blobs[layer.String()]) {
		t.Fatal("wrong bytes")
	}
	if status, _, _ := request(t, http.MethodGet, holder.host, "/v2/test/other/manifests/v1", alice); status != http.StatusOK {
		t.Fatal("test/other")
	}
	for _, b := range f.other.Blobs {
		if status, _, _ := request(t, http.MethodGet, holder.host, "/v2/test/other/blobs/"+b, alice); status != http.StatusOK {
			t.Fatal("test/other blob")
		}
		if _, err := tc.Get(as(f, "test/private", alice), hid, digest.Digest(b), 0, -1); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("test/other's blob asked under test/private with alice's credential: %v, want not found", err)
		}
	}

	// A client with a credential, through the node that has none: its credential is checked at
	// the origin, used there, and forwarded to the holder.
	f.requireServed(t, bare.host, bob, "bob through the credential-less node")

	// The origin goes down: alice's credential, accepted lately, still opens the holder's
	// content to her and to a peer presenting it; carol's (never verified) does not, and
	// without a credential nothing is served.
	f.origin.Proc.Stop()
	rng, err = tc.Get(as(f, "test/private", alice), hid, layer, 0, -1)
	if err != nil {
		t.Fatalf("origin down: get with alice's recently verified credential: %v", err)
	}
	rng.Close()
	if _, err := tc.Get(as(f, "test/private", "Basic Y2Fyb2w6eA=="), hid, layer, 0, -1); err == nil {
		t.Error("origin down: an unverified credential was served")
	}
	for _, b := range f.private.Blobs {
		if status, _, _ := request(t, http.MethodGet, holder.host, "/v2/test/private/blobs/"+b, alice); status != http.StatusOK {
			t.Errorf("origin down: alice's blob %s: %d, want 200", b, status)
		}
		if status, _, _ := request(t, http.MethodGet, holder.host, "/v2/test/private/blobs/"+b, "Basic Y2Fyb2w6eA=="); status == http.StatusOK {
			t.Errorf("origin down: an unverified credential got blob %s", b)
		}
		if status, _, _ := request(t, http.MethodGet, holder.host, "/v2/test/private/blobs/"+b, ""); status != http.StatusUnauthorized {
			t.Errorf("origin down: no credential got %d for blob %s, want 401", status, b)
		}
	}
}

// A coordinator with no credentials of its own fetches and resolves a private repository for a
// peer with the credential the peer forwarded (and the origin accepted), so a private rollout
// still costs the origin one copy: an anonymous fetch would be refused, and every asking node
// would go to the origin itself.
func TestCoordinatorUsesTheAskingPeersCredential(t *testing.T) {
	f := newPrivateFixture(t)
	coord := startAgentConfig(t, agent.Config{DataDir: t.TempDir(), Registries: []string{f.origin.URL}, ChunkSize: 64 << 10,
		P2P: &p2p.Config{ListenAddrs: []string{loopback}}})
	tc, cid := peerClient(t, coord.Node().Addrs(), coord)
	alice := f.origin.Auth("alice")
	ctx, cancel := context.WithTimeout(as(f, "test/private", alice), time.Minute)
	defer cancel()

	rec, err := tc.Resolve(ctx, cid, f.origin.Addr, "test/private", "v1", oci.ManifestTypes())
	if err != nil || rec.Digest.String() != f.private.Manifest {
		t.Fatalf("resolve through a coordinator without credentials: %v %v, want %s", rec.Digest, err, f.private.Manifest)
	}
	layer := digest.Digest(f.private.Blobs[len(f.private.Blobs)-1])
	if err := tc.Pull(ctx, cid, f.origin.Addr, "test/private", layer); err != nil {
		t.Fatalf("pull through a coordinator without credentials: %v", err)
	}
	waitFor(t, func() bool {
		rng, err := tc.Get(ctx, cid, layer, 0, -1)
		if err != nil {
			return false
		}
		defer rng.Close()
		got, err := io.ReadAll(rng)
		return err == nil && bytes.Equal(got, f.blobs[layer.String()])
	}, "the coordinator to hold the layer it fetched with the peer's credential")
}

// token does what containerd does with a challenge an agent relays from a token-auth origin: it
// asks the agent for test/private:v1 without credentials, reads the Bearer challenge (the origin's
// realm, service and scope), and trades user's Basic credential ("" for none: an anonymous
// token) for a token at that realm.
func (f *privateFixture) token(t *testing.T, host, user string) string {
	t.Helper()
	status, h, _ := request(t, http.MethodGet, host, "/v2/test/private/manifests/v1", "")
	ch := h.Get("WWW-Authenticate")
	scheme, params, _ := strings.Cut(ch, " ")
	if status != http.StatusUnauthorized || scheme != "Bearer" {
		t.Fatalf("anonymous request: %d, challenge %q; want 401 with the origin's Bearer challenge", status, ch)
	}
	p := map[string]string{}
	for _, kv := range strings.Split(params, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		p[k] = strings.Trim(v, `"`)
	}
	if p["realm"] != f.origin.Realm || p["scope"] != "repository:test/private:pull" {
		t.Fatalf("challenge %q: want the origin's realm %s and a pull scope for test/private", ch, f.origin.Realm)
	}
	req, err := http.NewRequest(http.MethodGet, p["realm"]+"?service="+url.QueryEscape(p["service"])+"&scope="+url.QueryEscape(p["scope"]), nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, f.origin.Users[user])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK || tok.Token == "" {
		t.Fatalf("token for %q: %d %v", user, resp.StatusCode, err)
	}
	return tok.Token
}

// The same rules hold behind token auth, as Docker Hub, GHCR and Harbor run it: the agent relays
// the origin's Bearer challenge, the client trades its own credential for a token at the origin's
// realm, and the agent checks that token at the origin. An anonymous token or none is refused, by
// the node and through a peer of it; a user's token is served, also through a node without
// credentials, which forwards it to the holder.
func TestPrivateRepositoryBehindTokenAuth(t *testing.T) {
	f := newPrivateFixtureWith(t, origins.StartTokenDockerRegistry)
	cfg := func(boot []string) agent.Config {
		return agent.Config{DataDir: t.TempDir(), Registries: []string{f.origin.URL}, ChunkSize: 64 << 10,
			P2P: &p2p.Config{ListenAddrs: []string{loopback}, Bootstrap: boot}}
	}
	holder := startAgentConfig(t, cfg(nil))
	f.requireRefused(t, holder.host, "", "no credential")
	f.requireRefused(t, holder.host, "Bearer "+f.token(t, holder.host, ""), "an anonymous token")
	alice := "Bearer " + f.token(t, holder.host, "alice")
	f.requireServed(t, holder.host, alice, "alice's token")

	peer := startAgentConfig(t, cfg(holder.Node().Addrs()))
	waitProvided(t, peer, append([]string{f.private.Manifest}, f.private.Blobs...)...)
	f.requireRefused(t, peer.host, "", "no credential, through a peer")
	f.requireServed(t, peer.host, "Bearer "+f.token(t, peer.host, "bob"), "bob's token, through a peer")
}
