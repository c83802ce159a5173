package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/access"
	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// The agent is the /v2 API's Backend: each request's repository is mapped to a Target (which
// refuses a registry that is not an upstream before any I/O), then answered by the part that
// owns it.
var (
	_ registryapi.Backend    = (*Agent)(nil)
	_ registryapi.Challenger = (*Agent)(nil)
)

// requestTarget is the Target of a /v2 request (see Target): a registry that is not an upstream
// is refused before any I/O.
func (a *Agent) requestTarget(r registryapi.Repository) (fetch.Target, error) {
	return a.Target(r.Registry, r.Name)
}

// authorized maps a request to its Target, carrying the client's credential, and decides whether
// the client may read q's object there (agent/access): a private repository's content goes only
// to a credential its origin accepts, unless the operator made the node's own credentials
// node-wide for the registry. The context it returns names the repository for peers.
func (a *Agent) authorized(ctx context.Context, r registryapi.Repository, q access.Request) (context.Context, fetch.Target, error) {
	t, err := a.requestTarget(r)
	if err != nil {
		return ctx, t, err
	}
	client, _ := credential.FromContext(ctx)
	if a.cfg.AdminToken != "" && client.Credential.Header() == "Bearer "+a.cfg.AdminToken {
		// The node's admin token (a seed's push clients send it) never goes to an origin or a peer.
		client.Credential = credential.Credential{}
	}
	q.Registry, q.Repo, q.Credential, q.Local = t.Registry, t.Repo, client.Credential, true
	if err := a.access.Authorize(ctx, q); err != nil {
		return ctx, t, err
	}
	if private, _ := a.access.Private(ctx, t.Registry, t.Repo); private {
		// Forwarded to peers, and used at the origin by a node without credentials of its own.
		t.Credential = client.Credential
	}
	return credential.NewContext(ctx, t.Access()), t, nil
}

// BaseChallenge asks clients of the base endpoint for credentials when the registry has private
// repositories (agent/access).
func (a *Agent) BaseChallenge(ctx context.Context, registry string) string {
	t, err := a.requestTarget(registryapi.Repository{Registry: registry})
	if err != nil {
		return ""
	}
	return a.access.BaseChallenge(ctx, t.Registry)
}

// OpenBlob serves a blob from the store, or joins or starts the one fetch of it.
func (a *Agent) OpenBlob(ctx context.Context, r registryapi.Repository, d digest.Digest) (registryapi.Blob, error) {
	ctx, t, err := a.authorized(ctx, r, access.Request{Kind: access.Blob, Digest: d})
	if err != nil {
		return nil, err
	}
	return a.pipeline.OpenBlob(ctx, t, d)
}

// StatBlob answers HEAD: from the store, a fetch in flight, or the sizes the node trusts (its
// records of verified manifests, the origin, the seeds); never from another peer's claim.
func (a *Agent) StatBlob(ctx context.Context, r registryapi.Repository, d digest.Digest) (int64, error) {
	ctx, t, err := a.authorized(ctx, r, access.Request{Kind: access.Blob, Digest: d})
	if err != nil {
		return 0, err
	}
	if info, err := a.store.Stat(d); err == nil {
		return info.Size, nil
	}
	if size, ok := a.pipeline.InFlightSize(d); ok {
		return size, nil
	}
	return a.sizes.BlobSize(ctx, t, d)
}

// GetManifest returns a manifest by digest or tag.
func (a *Agent) GetManifest(ctx context.Context, r registryapi.Repository, ref string, accept []string) (*registryapi.Manifest, error) {
	q := access.Request{Kind: access.Manifest, Tag: ref}
	if strings.Contains(ref, ":") {
		d, err := digest.Parse(ref)
		if err != nil {
			return nil, fmt.Errorf("reference %q: %w", ref, errdefs.ErrInvalid)
		}
		q = access.Request{Kind: access.Manifest, Digest: d}
	}
	ctx, t, err := a.authorized(ctx, r, q)
	if err != nil {
		return nil, err
	}
	m, err := a.resolver.Get(ctx, t, ref, accept)
	if err != nil {
		return nil, err
	}
	// What the repository lists, for deciding later requests without asking the origin.
	a.access.Learn(t.Registry, t.Repo, q.Digest == "", m.Digest, m.Body)
	return &registryapi.Manifest{MediaType: m.MediaType, Digest: m.Digest, Body: m.Body, Source: m.Source}, nil
}

// Tags passes tag listing through to the origin.
func (a *Agent) Tags(ctx context.Context, r registryapi.Repository, n int, last string) (*registryapi.Listing, error) {
	ctx, t, err := a.authorized(ctx, r, access.Request{Kind: access.Listing})
	if err != nil {
		return nil, err
	}
	if t.Registry == nil {
		return nil, fmt.Errorf("tags of %s: %w", t.Repo, fetch.ErrNoOrigin)
	}
	return listing(a.origin.Tags(ctx, t.Registry, t.Repo, n, last))
}

// Referrers passes the referrers API through to the origin.
func (a *Agent) Referrers(ctx context.Context, r registryapi.Repository, d digest.Digest, artifactType string) (*registryapi.Listing, error) {
	ctx, t, err := a.authorized(ctx, r, access.Request{Kind: access.Listing})
	if err != nil {
		return nil, err
	}
	if t.Registry == nil {
		return nil, fmt.Errorf("referrers of %s: %w", d, fetch.ErrNoOrigin)
	}
	return listing(a.origin.Referrers(ctx, t.Registry, t.Repo, d, artifactType))
}

// listing relays an origin's listing answer.
func listing(p *origin.Passthrough, err error) (*registryapi.Listing, error) {
	if err != nil {
		return nil, err
	}
	return &registryapi.Listing{Status: p.Status, ContentType: p.ContentType, Link: p.Link, FiltersApplied: p.FiltersApplied, Body: p.Body}, nil
}

// Transfer is a blob fetch in flight, as the status page shows it.
type Transfer = fetch.Transfer

// Status reports the node's state.
func (a *Agent) Status() Status {
	st := Status{ConnectedPeers: []string{}, Registries: a.cfg.Registries, HostedRegistry: a.cfg.HostedRegistry}
	if a.node != nil {
		st.PeerID = a.node.ID().String()
		st.ListenAddrs = a.node.Addrs()
		for _, p := range a.node.Peers() {
			st.ConnectedPeers = append(st.ConnectedPeers, p.String())
		}
		sort.Strings(st.ConnectedPeers)
		st.RoutingTableSize = a.node.RoutingTableSize()
	}
	st.Store.Bytes, st.Store.Objects = a.store.Usage()
	st.Store.Pending = a.store.Pending()
	st.Transfers = a.pipeline.Transfers()
	return st
}

func (a *Agent) serveStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(a.Status()); err != nil {
		a.log.Debug("writing status", "err", err)
	}
}
