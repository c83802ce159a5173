// Package seedauth decides who is a seed. The operator holds a seed authority: an Ed25519 key
// pair (`shoal seed-authority create`). A seed given the private key signs a statement that
// binds its own peer ID to the seed role; every node given the public key accepts as seeds only
// peers that present a valid statement naming themselves, over a channel that authenticated
// that peer ID. A node with no authority configured accepts no seed at all, except peers listed
// by ID.
package seedauth

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// Purpose is signed into every statement, so that a signature the authority key made for
// anything else never reads as a seed authorization.
const Purpose = "shoal/seed-authorization/1"

// DefaultValidity is how long a statement a seed signs for itself is valid; the seed signs a new
// one before half of it has passed, so a removed authority key stops working within a day.
const DefaultValidity = 24 * time.Hour

// publicKeyPrefix starts the text form of an authority's public key.
const publicKeyPrefix = "shoal-seed-authority:"

// ErrNotAuthorized is wrapped by every verification failure.
var ErrNotAuthorized = fmt.Errorf("not an authorized seed: %w", errdefs.ErrDenied)

// Statement says that the holder of an authority key made Peer a seed until Expires.
type Statement struct {
	Purpose string    `json:"purpose"`
	Peer    string    `json:"peer"`
	Expires time.Time `json:"expires"`
	// Key is the authority's public key (FormatPublicKey), so that a node trusting several
	// authorities knows which one to check against.
	Key string `json:"key"`
	Sig []byte `json:"sig"`
}

// Sign makes a statement that p is a seed until expires.
func Sign(k ed25519.PrivateKey, p peer.ID, expires time.Time) Statement {
	st := Statement{Purpose: Purpose, Peer: p.String(), Expires: expires.UTC().Truncate(time.Second),
		Key: FormatPublicKey(k.Public().(ed25519.PublicKey))}
	st.Sig = ed25519.Sign(k, st.signed())
	return st
}

// signed is what the signature covers: purpose, peer ID and expiry, each unambiguous.
func (st Statement) signed() []byte {
	return []byte(st.Purpose + "\n" + st.Peer + "\n" + strconv.FormatInt(st.Expires.Unix(), 10) + "\n")
}

// FormatPublicKey is the copy-pasteable text form of an authority's public key, the value of
// --seed-authority.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return publicKeyPrefix + base64.RawURLEncoding.EncodeToString(pub)
}

// ParsePublicKey reads FormatPublicKey's form.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	enc, ok := strings.CutPrefix(s, publicKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("seed authority %q: want %s<key>, as `shoal seed-authority create` prints: %w", s, publicKeyPrefix, errdefs.ErrInvalid)
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("seed authority %q: not a %d-byte Ed25519 key: %w", s, ed25519.PublicKeySize, errdefs.ErrInvalid)
	}
	return ed25519.PublicKey(b), nil
}

// Authority is what a node trusts to name seeds: authority public keys, and peers listed by ID.
// The zero value trusts nothing: no peer is a seed.
type Authority struct {
	keys  []ed25519.PublicKey
	peers map[peer.ID]bool
}

// NewAuthority trusts statements signed by keys, and the peers listed, without statements.
func NewAuthority(keys []ed25519.PublicKey, peers []peer.ID) *Authority {
	a := &Authority{peers: map[peer.ID]bool{}}
	for _, k := range keys {
		if len(k) == ed25519.PublicKeySize {
			a.keys = append(a.keys, k)
		}
	}
	for _, p := range peers {
		a.peers[p] = true
	}
	return a
}

// Empty reports whether the authority trusts no one: then no check needs the network.
func (a *Authority) Empty() bool { return a == nil || (len(a.keys) == 0 && len(a.peers) == 0) }

// Listed reports whether p is a seed by the operator's list.
func (a *Authority) Listed(p peer.ID) bool { return a != nil && a.peers[p] }

// NeedsStatements reports whether any authority key is trusted, i.e. whether asking a peer for
// its statement can make it a seed.
func (a *Authority) NeedsStatements() bool { return a != nil && len(a.keys) > 0 }

// Verify checks that st makes p a seed at now: the purpose, the peer ID (the one the channel
// authenticated, never the one the statement claims alone), the expiry, and a signature by one
// of the trusted keys. Every failure wraps ErrNotAuthorized.
func (a *Authority) Verify(st Statement, p peer.ID, now time.Time) error {
	fail := func(why string) error { return fmt.Errorf("%s: %s: %w", p, why, ErrNotAuthorized) }
	switch {
	case a == nil || len(a.keys) == 0:
		return fail("no seed authority is trusted")
	case st.Purpose != Purpose:
		return fail(fmt.Sprintf("statement for %q, not %q", truncate(st.Purpose), Purpose))
	case st.Peer != p.String():
		return fail(fmt.Sprintf("statement names %s", truncate(st.Peer)))
	case !now.Before(st.Expires):
		return fail(fmt.Sprintf("statement expired at %s", st.Expires.Format(time.RFC3339)))
	}
	key, err := ParsePublicKey(st.Key)
	if err != nil {
		return fail("statement names no valid authority key")
	}
	trusted := false
	for _, k := range a.keys {
		if k.Equal(key) {
			trusted = true
			break
		}
	}
	if !trusted {
		return fail("statement signed by an authority this node does not trust")
	}
	if !ed25519.Verify(key, st.signed(), st.Sig) {
		return fail("bad signature")
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
