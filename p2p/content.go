package p2p

import (
	_ "crypto/sha256" // register the digest algorithms go-digest validates against
	_ "crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// DigestCID returns the DHT key of a digest: a CIDv1 with the raw codec whose multihash is the digest's own
// bytes (sha2-256 for sha256 digests, sha2-512 for sha512). The CID names exactly the bytes the digest names;
// the digest string is never hashed again. Other algorithms fail with errdefs.ErrUnsupported, malformed
// digests with errdefs.ErrInvalid.
func DigestCID(d digest.Digest) (cid.Cid, error) {
	if err := d.Validate(); err != nil {
		if errors.Is(err, digest.ErrDigestUnsupported) {
			return cid.Undef, fmt.Errorf("digest %q: algorithm has no DHT key: %w", d, errdefs.ErrUnsupported)
		}
		return cid.Undef, fmt.Errorf("digest %q: %v: %w", d, err, errdefs.ErrInvalid)
	}
	var code uint64
	switch d.Algorithm() {
	case digest.SHA256:
		code = mh.SHA2_256
	case digest.SHA512:
		code = mh.SHA2_512
	default:
		return cid.Undef, fmt.Errorf("digest %q: algorithm %q has no DHT key: %w", d, d.Algorithm(), errdefs.ErrUnsupported)
	}
	raw, err := hex.DecodeString(d.Encoded())
	if err != nil {
		return cid.Undef, fmt.Errorf("digest %q: %v: %w", d, err, errdefs.ErrInvalid)
	}
	m, err := mh.Encode(raw, code)
	if err != nil {
		return cid.Undef, fmt.Errorf("digest %q: %v: %w", d, err, errdefs.ErrInvalid)
	}
	return cid.NewCidV1(cid.Raw, m), nil
}

// CIDDigest is the inverse of DigestCID. It accepts only CIDv1 raw-codec keys with a sha2-256 or sha2-512
// multihash, so a key that Shoal did not make is rejected (errdefs.ErrInvalid or errdefs.ErrUnsupported).
func CIDDigest(c cid.Cid) (digest.Digest, error) {
	if !c.Defined() {
		return "", fmt.Errorf("undefined CID: %w", errdefs.ErrInvalid)
	}
	if c.Version() != 1 || c.Type() != cid.Raw {
		return "", fmt.Errorf("CID %s: want CIDv1 with the raw codec: %w", c, errdefs.ErrInvalid)
	}
	dm, err := mh.Decode(c.Hash())
	if err != nil {
		return "", fmt.Errorf("CID %s: %v: %w", c, err, errdefs.ErrInvalid)
	}
	var alg digest.Algorithm
	switch dm.Code {
	case mh.SHA2_256:
		alg = digest.SHA256
	case mh.SHA2_512:
		alg = digest.SHA512
	default:
		return "", fmt.Errorf("CID %s: multihash %s is not an OCI digest algorithm: %w", c, dm.Name, errdefs.ErrUnsupported)
	}
	d := digest.NewDigestFromEncoded(alg, hex.EncodeToString(dm.Digest))
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("CID %s: %v: %w", c, err, errdefs.ErrInvalid)
	}
	return d, nil
}

// digestKey is DigestCID's multihash, the form the reprovider's keystore holds.
func digestKey(d digest.Digest) (mh.Multihash, error) {
	c, err := DigestCID(d)
	if err != nil {
		return nil, err
	}
	return c.Hash(), nil
}
