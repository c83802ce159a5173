package seedauth

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mss "github.com/multiformats/go-multistream"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// ProtocolID is the protocol a seed answers with its statement: the asker opens a stream, the
// seed writes one JSON Statement and closes it.
const ProtocolID protocol.ID = "/shoal/seed-auth/1"

const (
	// maxStatement bounds a statement on the wire (one is about 300 bytes).
	maxStatement = 4 << 10
	// fetchTimeout bounds asking a peer for its statement.
	fetchTimeout = 2 * time.Second
)

// Signer is a seed's own statement, signed anew before half of its validity has passed.
type Signer struct {
	key      ed25519.PrivateKey
	self     peer.ID
	validity time.Duration

	mu sync.Mutex
	st Statement
}

// NewSigner signs statements for self with the authority key k, each valid for validity
// (DefaultValidity when zero).
func NewSigner(k ed25519.PrivateKey, self peer.ID, validity time.Duration) *Signer {
	if validity <= 0 {
		validity = DefaultValidity
	}
	return &Signer{key: k, self: self, validity: validity}
}

// PublicKey is the authority key the signer signs with.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Statement returns a statement for the signer's peer that is valid for at least half of the
// validity.
func (s *Signer) Statement() Statement {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); s.st.Sig == nil || s.st.Expires.Sub(now) < s.validity/2 {
		s.st = Sign(s.key, s.self, now.Add(s.validity))
	}
	return s.st
}

// Serve answers ProtocolID on h with s's statement, for any peer that asks: a statement is no
// secret, and it makes no one but this peer a seed.
func Serve(h host.Host, s *Signer) {
	h.SetStreamHandler(ProtocolID, func(st network.Stream) {
		defer st.Close()
		_ = st.SetDeadline(time.Now().Add(fetchTimeout))
		if err := json.NewEncoder(st).Encode(s.Statement()); err != nil {
			_ = st.Reset()
		}
	})
}

// Fetch asks peer p for its statement. The statement is only p's claim: Authority.Verify
// decides. Errors wrap errdefs.ErrNotFound when p does not speak the protocol,
// errdefs.ErrUnavailable when no stream could be opened, errdefs.ErrInvalid for a bad answer.
func Fetch(ctx context.Context, h host.Host, p peer.ID) (Statement, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	st, err := h.NewStream(ctx, p, ProtocolID)
	if errors.Is(err, mss.ErrNotSupported[protocol.ID]{}) {
		return Statement{}, fmt.Errorf("seed statement of %s: %w: %w", p, err, errdefs.ErrNotFound)
	}
	if err != nil {
		return Statement{}, fmt.Errorf("seed statement of %s: %w: %w", p, err, errdefs.ErrUnavailable)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	_ = st.CloseWrite()
	var stmt Statement
	if err := json.NewDecoder(io.LimitReader(st, maxStatement)).Decode(&stmt); err != nil {
		_ = st.Reset()
		return Statement{}, fmt.Errorf("seed statement of %s: %w: %w", p, err, errdefs.ErrInvalid)
	}
	return stmt, nil
}
