package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/registryapi"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// The agent is the /v2 API's Backend: each request's repository is mapped to a Target (which
// refuses a registry that is not an upstream before any I/O), then answered by the part that
// owns it.
var _ registryapi.Backend = (*Agent)(nil)

// requestTarget is the Target of a /v2 request (see Target): a registry that is not an upstream
// is refused before any I/O.
func (a *Agent) requestTarget(r registryapi.Repository) (fetch.Target, error) {
	return a.Target(r.Registry, r.Name)
}

// OpenBlob serves a blob from the store, or joins or starts the one fetch of it.
func (a *Agent) OpenBlob(ctx context.Context, r registryapi.Repository, d digest.Digest) (registryapi.Blob, error) {
	t, err := a.requestTarget(r)
	if err != nil {
		return nil, err
	}
	return a.pipeline.OpenBlob(ctx, t, d)
}

// StatBlob answers HEAD: from the store, a fetch in flight, or the sizes the node trusts (its
// records of verified manifests, the origin, the seeds); never from another peer's claim.
func (a *Agent) StatBlob(ctx context.Context, r registryapi.Repository, d digest.Digest) (int64, error) {
	t, err := a.requestTarget(r)
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
	t, err := a.requestTarget(r)
	if err != nil {
		return nil, err
	}
	m, err := a.resolver.Get(ctx, t, ref, accept)
	if err != nil {
		return nil, err
	}
	return &registryapi.Manifest{MediaType: m.MediaType, Digest: m.Digest, Body: m.Body, Source: m.Source}, nil
}

// Tags passes tag listing through to the origin.
func (a *Agent) Tags(ctx context.Context, r registryapi.Repository, n int, last string) (*registryapi.Listing, error) {
	t, err := a.requestTarget(r)
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
	t, err := a.requestTarget(r)
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
