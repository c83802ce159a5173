package main

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// WriteLayout writes the index into the OCI layout at dir (created if needed), named by the
// version (org.opencontainers.image.ref.name), so `skopeo copy oci:DIR:VERSION ...` finds it.
// An existing layout keeps its other images.
func WriteLayout(dir string, b *Built) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return fmt.Errorf("OCI layout %s: %w", dir, err)
		}
	}
	err = p.ReplaceIndex(b.Index, match(b.Version), layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": b.Version,
	}))
	if err != nil {
		return fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	return nil
}

// match selects the layout entries named like the version, which the new index replaces.
func match(version string) func(v1.Descriptor) bool {
	return func(d v1.Descriptor) bool { return d.Annotations["org.opencontainers.image.ref.name"] == version }
}

// Push uploads the index and everything it lists to ref, with the credentials of the docker
// config (as crane does), and returns ref@digest.
func Push(ctx context.Context, idx v1.ImageIndex, ref string, insecure bool) (string, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return "", fmt.Errorf("--push %q: %w", ref, err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return "", fmt.Errorf("pushing to %s: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return "", err
	}
	return r.Context().Name() + ":" + r.Identifier() + "@" + d.String(), nil
}
