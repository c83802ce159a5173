// Package access decides who may read a private repository's content through this node. A
// repository whose origin refuses anonymous reads is private; its manifests, blobs, tags and
// referrers go to a local client or a peer only with a credential the origin accepts for that
// repository (checked with one request at the origin and cached per credential and repository),
// or to local clients when the operator declared the node's own credentials node-wide for its
// registry. A credential for one repository never unlocks a digest only another lists: the
// node's Records, or else the origin, must say the named repository lists it. While the origin
// cannot be reached, only credentials it accepted within a bounded window are served.
//
// Public repositories cost one cached privacy probe per repository and window; their content is
// served as before, except a digest this node knows only as a private repository's.
package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-oci/shoal/internal/credential"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/internal/reference"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// Defaults of Config.
const (
	// DefaultTTL is how long the origin's acceptance of a credential for a repository is used
	// before it is asked again: the cost is one origin request per credential, repository and TTL.
	DefaultTTL = time.Minute
	// DefaultOfflineWindow is how long after the origin last accepted a credential it is still
	// served while the origin cannot be reached.
	DefaultOfflineWindow = 15 * time.Minute
	// DefaultPrivacyTTL is how long a repository's privacy probe is used before it is repeated.
	// A probe older than that is still used while the origin cannot be reached.
	DefaultPrivacyTTL = 10 * time.Minute
	// DefaultMaxEntries bounds each decision cache.
	DefaultMaxEntries = 4096
	// probeTimeout bounds a privacy probe; probeRetry is how long after a failed one the origin
	// is taken as unreachable for that repository, so that an outage (even one that swallows
	// packets) does not make every request wait for a probe.
	probeTimeout = 10 * time.Second
	probeRetry   = 30 * time.Second
	// pingTimeout bounds the base endpoint's question to the origin.
	pingTimeout = 5 * time.Second
	// maxStalePrivacy is how long a privacy probe is kept for use during an outage.
	maxStalePrivacy = 24 * time.Hour
)

// Kind is what a request asks for.
type Kind int

const (
	// Manifest is a manifest by tag (Request.Tag) or by digest (Request.Digest).
	Manifest Kind = iota
	// Blob is a blob by digest.
	Blob
	// Content is a digest that may be a blob or a manifest: what a peer asks for.
	Content
	// Listing is the repository itself: its tag list, its referrers, a tag's records.
	Listing
)

// Request is one question: may this credential read this object of this repository?
type Request struct {
	// Registry is the upstream; nil (no upstream: content from the cluster alone) is public.
	Registry *origin.Registry
	Repo     string
	Kind     Kind
	Tag      string
	Digest   digest.Digest
	// Credential is the one the client presented (a local client's Authorization header, or the
	// one a peer forwarded for its client).
	Credential credential.Credential
	// Local is a local client's request, to which node-wide credentials apply; false for a peer.
	Local bool
}

// Config tunes a Checker; zero fields take the defaults.
type Config struct {
	// NodeWide are registry hosts for which the node's own credentials serve every local client.
	NodeWide []string
	// TTL, OfflineWindow, PrivacyTTL and MaxEntries: see the defaults.
	TTL, OfflineWindow, PrivacyTTL time.Duration
	MaxEntries                     int
	// StateFile keeps the repositories found private across restarts ("": in memory only).
	StateFile string
}

// Deps are what a Checker asks.
type Deps struct {
	Origin Origin
	// Upstreams maps the registry hosts in Records to upstreams.
	Upstreams *origin.Set
	// Records is the node's record of which repositories list a digest (default: in memory).
	Records Records
	// Membership is asked what Records do not know (default: OriginMembership).
	Membership Membership
	// Decisions counts decisions by result; nil counts nowhere.
	Decisions *prometheus.CounterVec
	Log       *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Checker answers Authorize. It is safe for concurrent use and has nothing to close.
type Checker struct {
	cfg        Config
	origin     Origin
	upstreams  *origin.Set
	records    Records
	membership Membership
	decisions  *prometheus.CounterVec
	log        *slog.Logger
	now        func() time.Time
	nodeWide   map[string]bool
	known      *known

	privacy  *cache[origin.Privacy]
	pings    *cache[string]   // registry host → the challenge its base endpoint relays ("" for none)
	failed   *cache[struct{}] // repositories whose probe failed lately: not probed again for a while
	accepted *cache[struct{}] // credential key + repository → when the origin last accepted it
	probes   singleflight.Group
	checks   singleflight.Group
}

// New returns a Checker. It fails when the state file cannot be read.
func New(deps Deps, cfg Config) (*Checker, error) {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.OfflineWindow <= 0 {
		cfg.OfflineWindow = DefaultOfflineWindow
	}
	if cfg.PrivacyTTL <= 0 {
		cfg.PrivacyTTL = DefaultPrivacyTTL
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	c := &Checker{cfg: cfg, origin: deps.Origin, upstreams: deps.Upstreams, records: deps.Records,
		membership: deps.Membership, decisions: deps.Decisions, log: deps.Log, now: deps.Now,
		nodeWide: make(map[string]bool),
		privacy:  newCache[origin.Privacy](cfg.MaxEntries, maxStalePrivacy),
		pings:    newCache[string](64, cfg.PrivacyTTL),
		failed:   newCache[struct{}](cfg.MaxEntries, probeRetry),
		accepted: newCache[struct{}](cfg.MaxEntries, max(cfg.OfflineWindow, cfg.TTL))}
	if c.records == nil {
		c.records = NewMemoryRecords(64 << 10)
	}
	if c.membership == nil {
		c.membership = OriginMembership{Origin: deps.Origin}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.upstreams == nil {
		c.upstreams = origin.EmptySet()
	}
	for _, h := range cfg.NodeWide {
		c.nodeWide[reference.CanonicalHost(h)] = true
	}
	var err error
	if c.known, err = loadKnown(cfg.StateFile, cfg.MaxEntries); err != nil {
		return nil, err
	}
	return c, nil
}

// Records returns the record of which repositories list a digest.
func (c *Checker) Records() Records { return c.records }

// Authorize returns nil when q may be served: an error wrapping errdefs.ErrUnauthorized (a
// *credential.Refusal carrying the origin's challenge) when the repository is private and the
// credential is missing or refused, ErrNotFound when the credential is accepted but the
// repository does not list the digest (or a public repository does not list a digest known only
// as a private one's), ErrUnavailable when the origin cannot be asked and nothing recent answers.
func (c *Checker) Authorize(ctx context.Context, q Request) error {
	if q.Registry == nil {
		return nil
	}
	if !names.ValidRepository(q.Repo) {
		return fmt.Errorf("repository %q: %w", q.Repo, errdefs.ErrInvalid)
	}
	p, err := c.repoPrivacy(ctx, q.Registry, q.Repo)
	if err != nil {
		c.count("unknown")
		return err
	}
	if !p.Private {
		return c.public(ctx, q)
	}
	if q.Local && c.nodeWide[reference.CanonicalHost(q.Registry.Name())] {
		c.count("node_wide")
		return nil
	}
	if q.Credential.IsZero() {
		c.count("no_credential")
		return &credential.Refusal{Repo: q.Repo, Challenge: p.Challenge}
	}
	return c.private(ctx, q, p.Challenge)
}

// Private reports whether the repository is private, by the cached probe.
func (c *Checker) Private(ctx context.Context, reg *origin.Registry, repo string) (bool, error) {
	if reg == nil {
		return false, nil
	}
	p, err := c.repoPrivacy(ctx, reg, repo)
	return p.Private, err
}

// Learn records what a manifest served for a repository lists: the manifest and the digests it
// names, when the repository is known to list the manifest (it was resolved from a tag, or the
// records or the origin said so).
func (c *Checker) Learn(reg *origin.Registry, repo string, byTag bool, d digest.Digest, body []byte) {
	if reg == nil {
		return
	}
	r := Repository{Registry: reference.CanonicalHost(reg.Name()), Repo: repo}
	if !byTag && !has(c.records.Listed(d), r) {
		return
	}
	c.records.Record(r, append([]digest.Digest{d}, Children(body)...)...)
}

// public answers for a public repository: anything but a digest this node knows only as a
// private repository's, unless the named repository lists it too.
func (c *Checker) public(ctx context.Context, q Request) error {
	if q.Digest == "" {
		return nil
	}
	r := Repository{Registry: reference.CanonicalHost(q.Registry.Name()), Repo: q.Repo}
	listed := c.records.Listed(q.Digest)
	if len(listed) == 0 || has(listed, r) {
		return nil
	}
	if c.anyPublic(ctx, listed) {
		return nil
	}
	ok, err := c.membership.Lists(ctx, q.Registry, q.Repo, q.Digest, credential.Credential{})
	if err != nil {
		c.count("unknown")
		return err
	}
	if !ok {
		c.count("not_listed")
		c.log.Info("refused a private repository's digest asked for under a public one", "digest", q.Digest, "repo", q.Repo)
		return fmt.Errorf("%s is not listed by %s: %w", q.Digest, q.Repo, errdefs.ErrNotFound)
	}
	c.records.Record(r, q.Digest)
	return nil
}

// private answers for a private repository and a credential.
func (c *Checker) private(ctx context.Context, q Request, challenge string) error {
	r := Repository{Registry: reference.CanonicalHost(q.Registry.Name()), Repo: q.Repo}
	key := q.Credential.Key() + " " + r.Registry + "/" + r.Repo
	now := c.now()
	_, at, known := c.accepted.get(key, now)
	unlisted := q.Digest != "" && !has(c.records.Listed(q.Digest), r)
	if known && now.Sub(at) <= c.cfg.TTL && !unlisted {
		c.count("cached")
		return nil
	}
	status, ch, err := c.check(ctx, q, key)
	log := c.log.With("repo", q.Repo, "registry", r.Registry, "credential", q.Credential.String())
	if err != nil {
		if known && now.Sub(at) <= c.cfg.OfflineWindow && !unlisted {
			c.count("offline_window")
			log.Warn("origin unreachable: serving a credential it accepted recently", "accepted", at, "err", err)
			return nil
		}
		c.count("unknown")
		return fmt.Errorf("%s: the origin cannot verify the credential: %w", q.Repo, err)
	}
	switch {
	case status < 400:
		c.accepted.put(key, struct{}{}, now)
		if q.Digest != "" {
			c.records.Record(r, q.Digest)
		}
		c.count("accepted")
		return nil
	case status == http.StatusNotFound:
		c.accepted.put(key, struct{}{}, now)
		if q.Digest != "" {
			c.count("not_listed")
			log.Info("credential accepted but the repository does not list the digest", "digest", q.Digest)
			return fmt.Errorf("%s is not listed by %s: %w", q.Digest, q.Repo, errdefs.ErrNotFound)
		}
		c.count("accepted")
		return nil
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		c.accepted.del(key)
		c.count("refused")
		log.Info("origin refused the credential", "status", status)
		if ch == "" {
			ch = challenge
		}
		return &credential.Refusal{Repo: q.Repo, Challenge: ch}
	default:
		c.count("refused")
		return fmt.Errorf("%s: origin answered %d to the credential: %w", q.Repo, status, errdefs.ErrDenied)
	}
}

// objects is what the origin is asked about for q: a Content digest as a blob, then as a
// manifest.
func objects(q Request) []origin.Object {
	switch q.Kind {
	case Manifest:
		ref := q.Tag
		if q.Digest != "" {
			ref = q.Digest.String()
		}
		return []origin.Object{origin.ManifestObject(ref)}
	case Blob:
		return []origin.Object{origin.BlobObject(q.Digest)}
	case Content:
		return []origin.Object{origin.BlobObject(q.Digest), origin.ManifestObject(q.Digest.String())}
	default:
		return []origin.Object{origin.TagsObject()}
	}
}

type checked struct {
	status    int
	challenge string
}

// check asks the origin about q's object with q's credential; identical concurrent checks share
// one request. A Content digest is asked as a blob, then as a manifest.
func (c *Checker) check(ctx context.Context, q Request, key string) (int, string, error) {
	objs := objects(q)
	ch := c.checks.DoChan(fmt.Sprintf("%s %d %s %s", key, q.Kind, q.Tag, q.Digest), func() (any, error) {
		cctx := context.WithoutCancel(ctx)
		var res checked
		for _, obj := range objs {
			status, challenge, err := c.origin.Check(cctx, q.Registry, q.Repo, obj, q.Credential)
			if err != nil {
				return nil, err
			}
			res = checked{status, challenge}
			if status != http.StatusNotFound {
				break
			}
		}
		return res, nil
	})
	select {
	case <-ctx.Done():
		return 0, "", context.Cause(ctx)
	case r := <-ch:
		if r.Err != nil {
			return 0, "", r.Err
		}
		v := r.Val.(checked)
		return v.status, v.challenge, nil
	}
}

// repoPrivacy is the repository's privacy, probed at most once
// per PrivacyTTL. While the origin cannot be reached, the last probe's answer is used however
// old (up to a day), else the state file's: a repository recorded private stays private, any
// other is taken as public (as before privacy was known; see docs/private.md).
func (c *Checker) repoPrivacy(ctx context.Context, reg *origin.Registry, repo string) (origin.Privacy, error) {
	key := reg.Name() + "/" + repo // names are unique; two aliases may share a host
	now := c.now()
	p, at, cached := c.privacy.get(key, now)
	if cached && now.Sub(at) <= c.cfg.PrivacyTTL {
		return p, nil
	}
	if _, _, failed := c.failed.get(key, now); failed {
		return c.unprobed(p, cached, key)
	}
	ch := c.probes.DoChan(key, func() (any, error) {
		// Shared by every caller of this repository, so not bound to the first one's context.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
		defer cancel()
		p, err := c.origin.Probe(pctx, reg, repo)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				c.failed.put(key, struct{}{}, c.now())
			}
			return nil, err
		}
		c.privacy.put(key, p, c.now())
		if err := c.known.set(key, p.Private, p.Challenge); err != nil {
			c.log.Warn("recording a private repository", "repo", repo, "err", err)
		}
		return p, nil
	})
	select {
	case <-ctx.Done():
		return origin.Privacy{}, context.Cause(ctx)
	case r := <-ch:
		if r.Err == nil {
			return r.Val.(origin.Privacy), nil
		}
		if errors.Is(r.Err, errdefs.ErrInvalid) {
			return origin.Privacy{}, r.Err
		}
		c.log.Warn("privacy probe failed: answering from what is known", "repo", repo, "registry", reg.Host(), "err", r.Err)
		return c.unprobed(p, cached, key)
	}
}

// unprobed is a repository's privacy while the origin cannot answer: the last probe's answer,
// else the state file's record of it as private, else public.
func (c *Checker) unprobed(last origin.Privacy, cached bool, key string) (origin.Privacy, error) {
	if cached {
		return last, nil
	}
	if challenge, ok := c.known.get(key); ok {
		return origin.Privacy{Private: true, Challenge: challenge}, nil
	}
	return origin.Privacy{}, nil
}

func (c *Checker) count(result string) {
	if c.decisions != nil {
		c.decisions.WithLabelValues(result).Inc()
	}
}

// anyPublic reports whether one of the repositories is known public: content it lists is anyone's.
func (c *Checker) anyPublic(ctx context.Context, repos []Repository) bool {
	for _, other := range repos {
		reg, err := c.upstreams.Select(other.Registry)
		if err != nil || reg == nil {
			continue
		}
		if p, err := c.repoPrivacy(ctx, reg, other.Repo); err == nil && !p.Private {
			return true
		}
	}
	return false
}

// Unnamed answers for a digest asked for under no repository (a peer of an earlier version, or
// one whose upstream this node does not have): served unless this node knows it only as a
// private repository's, since no credential can be checked without a repository.
func (c *Checker) Unnamed(ctx context.Context, d digest.Digest) error {
	listed := c.records.Listed(d)
	if len(listed) == 0 {
		return nil
	}
	if c.anyPublic(ctx, listed) {
		return nil
	}
	c.count("no_repository")
	return &credential.Refusal{Repo: listed[0].Repo}
}

// BaseChallenge is the challenge the node's base endpoint (/v2/) answers an anonymous client with
// for reg, or "" to answer 200 as a public registry does. Clients of the containers libraries
// (skopeo, podman, CRI-O) learn from that endpoint whether to send credentials at all, so a
// registry with private repositories must challenge there: one this node found private
// repositories on, or one whose own base endpoint demands Basic credentials (it serves nothing
// anonymously). A registry that challenges only to hand out anonymous tokens (Docker Hub) is
// answered 200, so public pulls go on as before.
func (c *Checker) BaseChallenge(ctx context.Context, reg *origin.Registry) string {
	if reg == nil {
		return ""
	}
	if ch, ok := c.known.anyOf(reg.Host()); ok {
		if ch == "" {
			ch = `Basic realm="` + reg.Host() + `"`
		}
		return ch
	}
	now := c.now()
	if ch, _, ok := c.pings.get(reg.Host(), now); ok {
		return ch
	}
	v, err, _ := c.probes.Do("ping "+reg.Host(), func() (any, error) {
		// Bounded tightly: a client waits on it for the base endpoint's answer.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pingTimeout)
		defer cancel()
		status, ch, err := c.origin.Ping(pctx, reg)
		if err != nil {
			return "", err
		}
		if status != http.StatusUnauthorized || !strings.HasPrefix(strings.ToLower(ch), "basic") {
			ch = ""
		}
		c.pings.put(reg.Host(), ch, c.now())
		return ch, nil
	})
	if err != nil {
		return ""
	}
	return v.(string)
}
