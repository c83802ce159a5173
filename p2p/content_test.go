package p2p

import (
	"errors"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

func TestDigestCIDRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		d    digest.Digest
		code uint64
	}{
		{name: "sha256", d: digest.SHA256.FromString("hello"), code: mh.SHA2_256},
		{name: "sha256 empty", d: digest.SHA256.FromBytes(nil), code: mh.SHA2_256},
		{name: "sha512", d: digest.SHA512.FromString("hello"), code: mh.SHA2_512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := DigestCID(tc.d)
			if err != nil {
				t.Fatalf("DigestCID: %v", err)
			}
			if c.Version() != 1 || c.Type() != cid.Raw {
				t.Errorf("CID %s: version %d codec %x, want CIDv1 raw", c, c.Version(), c.Type())
			}
			dm, err := mh.Decode(c.Hash())
			if err != nil {
				t.Fatal(err)
			}
			// The multihash carries the digest's own bytes: nothing is hashed again.
			if dm.Code != tc.code || digest.NewDigestFromBytes(tc.d.Algorithm(), dm.Digest) != tc.d {
				t.Errorf("multihash %s %x does not carry %s", dm.Name, dm.Digest, tc.d)
			}
			back, err := CIDDigest(c)
			if err != nil {
				t.Fatalf("CIDDigest: %v", err)
			}
			if back != tc.d {
				t.Errorf("round trip: got %s, want %s", back, tc.d)
			}
			// A CID that went through its string form still maps back.
			parsed, err := cid.Decode(c.String())
			if err != nil {
				t.Fatal(err)
			}
			if back, _ := CIDDigest(parsed); back != tc.d {
				t.Errorf("round trip through %s: got %s", c, back)
			}
		})
	}
}

func TestDigestCIDRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		d    digest.Digest
		want error
	}{
		{name: "sha384", d: digest.SHA384.FromString("hello"), want: errdefs.ErrUnsupported},
		{name: "unknown algorithm", d: digest.Digest("blake3:" + strings.Repeat("a", 64)), want: errdefs.ErrUnsupported},
		{name: "no separator", d: "sha256", want: errdefs.ErrInvalid},
		{name: "empty", d: "", want: errdefs.ErrInvalid},
		{name: "short hex", d: "sha256:abcd", want: errdefs.ErrInvalid},
		{name: "upper-case hex", d: digest.Digest("sha256:" + strings.Repeat("A", 64)), want: errdefs.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := DigestCID(tc.d)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DigestCID(%q) = %v, %v; want error %v", tc.d, c, err, tc.want)
			}
		})
	}
}

func TestCIDDigestRejects(t *testing.T) {
	t.Parallel()
	sum := digest.SHA256.FromString("hello")
	raw, _ := DigestCID(sum)
	identity, _ := mh.Sum([]byte("hi"), mh.IDENTITY, -1)
	blake, _ := mh.Sum([]byte("hi"), mh.BLAKE2B_MIN+31, -1)
	for _, tc := range []struct {
		name string
		c    cid.Cid
		want error
	}{
		{name: "undefined", c: cid.Undef, want: errdefs.ErrInvalid},
		{name: "CIDv0", c: cid.NewCidV0(raw.Hash()), want: errdefs.ErrInvalid},
		{name: "dag-pb codec", c: cid.NewCidV1(cid.DagProtobuf, raw.Hash()), want: errdefs.ErrInvalid},
		{name: "identity multihash", c: cid.NewCidV1(cid.Raw, identity), want: errdefs.ErrUnsupported},
		{name: "blake2b multihash", c: cid.NewCidV1(cid.Raw, blake), want: errdefs.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if d, err := CIDDigest(tc.c); !errors.Is(err, tc.want) {
				t.Fatalf("CIDDigest(%v) = %q, %v; want error %v", tc.c, d, err, tc.want)
			}
		})
	}
}
