package resolve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/tags"
)

const manifestType = "application/vnd.oci.image.manifest.v1+json"

// cluster is one authorized seed, which hosts site/app:v1 as rec.
type cluster struct {
	seed peer.ID
	rec  tags.Record
}

func (c *cluster) CoordinatorFor(context.Context, string) (peer.ID, bool, error) {
	return "", false, errors.New("no coordinator")
}
func (c *cluster) Seeds(context.Context) []peer.ID                  { return []peer.ID{c.seed} }
func (c *cluster) AuthorizedSeed(_ context.Context, p peer.ID) bool { return p == c.seed }
func (c *cluster) Self() peer.ID                                    { return "self" }
func (c *cluster) Resolve(_ context.Context, p peer.ID, registry, repo, tag string, _ []string) (tags.Record, error) {
	if p != c.seed || registry != "" || repo+":"+tag != "site/app:v1" {
		return tags.Record{}, errdefs.ErrNotFound
	}
	return c.rec, nil
}

// peers hold manifests by peer; no provider record names any yet (a seed that took a push a
// moment ago is not in the DHT).
type peers struct {
	held map[peer.ID]map[digest.Digest][]byte
}

func (p *peers) Manifest(_ context.Context, d digest.Digest) ([]byte, string, error) {
	return nil, "", fmt.Errorf("%s: no peer provides it: %w", d, errdefs.ErrNotFound)
}
func (p *peers) ManifestFrom(_ context.Context, ps []peer.ID, d digest.Digest) ([]byte, string, error) {
	for _, id := range ps {
		if b, ok := p.held[id][d]; ok {
			return b, manifestType, nil
		}
	}
	return nil, "", errdefs.ErrNotFound
}
func (p *peers) TagRecords(context.Context, []peer.ID, string, string, string) []tags.Record {
	return nil
}

// Hosted content that no provider record names yet is taken from the seeds that hold it: the
// one that answered the tag, and any seed for a manifest asked for by digest. Hosted content has
// no origin to fall back on, so the DHT alone would answer 404 until the seed's records spread.
func TestHostedManifestFromSeedsBeforeProviderRecords(t *testing.T) {
	body := []byte(`{"schemaVersion":2,"mediaType":"` + manifestType + `","config":{}}`)
	d := digest.FromBytes(body)
	seedID := peer.ID("seed")
	for _, tc := range []struct {
		name string
		get  func(r *Resolver) (*Manifest, error)
	}{
		{"by tag", func(r *Resolver) (*Manifest, error) {
			return r.Get(context.Background(), fetch.Target{Repo: "site/app"}, "v1", nil)
		}},
		{"by digest", func(r *Resolver) (*Manifest, error) {
			return r.Get(context.Background(), fetch.Target{Repo: "site/app"}, d.String(), nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			r := New(Deps{Store: st,
				Peers:   &peers{held: map[peer.ID]map[digest.Digest][]byte{seedID: {d: body}}},
				Cluster: &cluster{seed: seedID, rec: tags.Record{Digest: d, MediaType: manifestType, Resolved: time.Now()}},
				TagTTL:  time.Minute, Started: time.Now(), Log: slog.New(slog.DiscardHandler)})
			t.Cleanup(r.Close)
			m, err := tc.get(r)
			if err != nil {
				t.Fatalf("hosted manifest: %v", err)
			}
			if m.Digest != d || !slices.Equal(m.Body, body) || m.Source != "peer" {
				t.Fatalf("got %s from %s, want %s from a peer", m.Digest, m.Source, d)
			}
		})
	}
}
