package seedauth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func TestVerify(t *testing.T) {
	k, other := newKey(t), newKey(t)
	p, q := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	now := time.Now()
	good := Sign(k, p, now.Add(time.Hour))
	auth := NewAuthority([]ed25519.PublicKey{pub(k)}, nil)
	if err := auth.Verify(good, p, now); err != nil {
		t.Fatalf("a valid statement: %v", err)
	}
	forged := good
	forged.Sig = append([]byte(nil), good.Sig...)
	forged.Sig[0] ^= 1
	later := good
	later.Expires = good.Expires.Add(24 * time.Hour) // the signature covers the expiry
	otherPurpose := Sign(k, p, now.Add(time.Hour))
	otherPurpose.Purpose = "something else"
	underTrustedName := Sign(other, p, now.Add(time.Hour))
	underTrustedName.Key = FormatPublicKey(pub(k))
	for _, tc := range []struct {
		name string
		auth *Authority
		st   Statement
		peer peer.ID
		at   time.Time
	}{
		{name: "forged signature", auth: auth, st: forged, peer: p, at: now},
		{name: "wrong peer ID", auth: auth, st: good, peer: q, at: now},
		{name: "untrusted key", auth: auth, st: Sign(other, p, now.Add(time.Hour)), peer: p, at: now},
		{name: "other key under the trusted key's name", auth: auth, st: underTrustedName, peer: p, at: now},
		{name: "expired", auth: auth, st: good, peer: p, at: good.Expires},
		{name: "expiry extended", auth: auth, st: later, peer: p, at: now},
		{name: "other purpose", auth: auth, st: otherPurpose, peer: p, at: now},
		{name: "no authority", auth: NewAuthority(nil, nil), st: good, peer: p, at: now},
		{name: "nil authority", auth: nil, st: good, peer: p, at: now},
		{name: "garbage key", auth: auth, st: Statement{Purpose: Purpose, Peer: p.String(), Expires: now.Add(time.Hour), Key: "x"}, peer: p, at: now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.auth.Verify(tc.st, tc.peer, tc.at); !errors.Is(err, ErrNotAuthorized) {
				t.Fatalf("Verify = %v, want ErrNotAuthorized", err)
			}
		})
	}
}

func TestKeyFiles(t *testing.T) {
	k := newKey(t)
	path := filepath.Join(t.TempDir(), "authority.key")
	if err := WriteKeyFile(path, k); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if err := WriteKeyFile(path, newKey(t)); err == nil {
		t.Fatal("an existing key file was overwritten")
	}
	got, err := ReadKeyFile(path)
	if err != nil || !got.Equal(k) {
		t.Fatalf("read back: %v", err)
	}
	text := FormatPublicKey(pub(k))
	if p, err := ParsePublicKey(" " + text + "\n"); err != nil || !p.Equal(pub(k)) {
		t.Fatalf("public key round trip: %v", err)
	}
	for _, bad := range []string{"", "ssh-ed25519 AAAA", publicKeyPrefix + "AAAA", publicKeyPrefix + "!!!"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", bad)
		}
	}
	for _, bad := range []string{"", "# only a comment\n", privateKeyPrefix + "AAAA\n", "shoal-seed-authority:" + text} {
		if _, err := ParseKey([]byte(bad)); err == nil {
			t.Errorf("ParseKey(%q) succeeded", bad)
		}
	}
}

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// A seed serves its own statement; a checker trusting the key accepts it, one trusting another
// key or none refuses it, and a peer listed by ID needs none.
func TestChecker(t *testing.T) {
	k := newKey(t)
	seed, plain, asker := newHost(t), newHost(t), newHost(t)
	s := NewSigner(k, seed.ID(), time.Hour)
	Serve(seed, s)
	for _, h := range []host.Host{seed, plain} {
		if err := asker.Connect(context.Background(), peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if c := NewChecker(asker, NewAuthority([]ed25519.PublicKey{pub(k)}, nil)); !c.Authorized(ctx, seed.ID()) || c.Authorized(ctx, plain.ID()) {
		t.Fatal("a checker trusting the key: want the seed authorized and the plain peer not")
	}
	if c := NewChecker(asker, NewAuthority([]ed25519.PublicKey{pub(newKey(t))}, nil)); c.Authorized(ctx, seed.ID()) {
		t.Fatal("a checker trusting another key authorized the seed")
	}
	if c := NewChecker(asker, nil); c.Authorized(ctx, seed.ID()) {
		t.Fatal("a checker trusting nothing authorized the seed")
	}
	if c := NewChecker(asker, NewAuthority(nil, []peer.ID{plain.ID()})); !c.Authorized(ctx, plain.ID()) || c.Authorized(ctx, seed.ID()) {
		t.Fatal("a listed peer: want it alone authorized")
	}
	// The signer renews its statement before half of its validity has passed.
	first := s.Statement()
	s.mu.Lock()
	s.st.Expires = time.Now().Add(time.Minute)
	s.mu.Unlock()
	if st := s.Statement(); !st.Expires.After(first.Expires.Add(-time.Second)) || NewAuthority([]ed25519.PublicKey{pub(k)}, nil).Verify(st, seed.ID(), time.Now()) != nil {
		t.Fatal("the signer did not renew a statement close to its expiry")
	}
}

// A peer that could not be asked is not remembered as refused (a real seed must not lose its role
// over a transient error); one that answered that it speaks no statement protocol is.
func TestCheckerRemembersOnlyAnswers(t *testing.T) {
	k := newKey(t)
	seed, plain, asker := newHost(t), newHost(t), newHost(t)
	c := NewChecker(asker, NewAuthority([]ed25519.PublicKey{pub(k)}, nil))
	ctx := context.Background()
	if c.Authorized(ctx, seed.ID()) { // no address known: no stream
		t.Fatal("an unreachable peer was authorized")
	}
	Serve(seed, NewSigner(k, seed.ID(), time.Hour))
	for _, h := range []host.Host{seed, plain} {
		if err := asker.Connect(ctx, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	if !c.Authorized(ctx, seed.ID()) {
		t.Fatal("a seed that was unreachable once stayed refused")
	}
	if c.Authorized(ctx, plain.ID()) {
		t.Fatal("a plain peer was authorized")
	}
	c.mu.Lock()
	v, ok := c.verdicts[plain.ID()]
	c.mu.Unlock()
	if !ok || v.ok {
		t.Fatalf("the plain peer's refusal was not remembered: %+v %v", v, ok)
	}
}
