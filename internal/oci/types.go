package oci

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
)

// Descriptor is a content descriptor: how a manifest names a blob or another manifest, and how
// a referrers index lists a referrer. The field order is the order Shoal has always written them
// in, so a referrers list stored or served before keeps its bytes.
type Descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	// ArtifactType is set on a referrers list's entries: the referrer's artifact type, else its
	// config's media type.
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	// URLs marks a non-distributable ("foreign") layer: clients fetch it from these, so a
	// registry need not hold it.
	URLs []string `json:"urls,omitempty"`
	// Platform is set on an index's entries for images; attestations and artifacts have none.
	Platform *v1.Platform `json:"platform,omitempty"`
}

// Manifest is a manifest body as Shoal reads it: an image manifest, an artifact manifest or an
// index, OCI's or Docker's (they share field names), in one shape, since a registry reads a body
// before it knows which of them it is. An index has Manifests; an image manifest has Config and
// Layers. Unknown fields are ignored, so any of them decodes; schemaVersion is left out among
// them, since nothing in Shoal reads it.
type Manifest struct {
	MediaType    string `json:"mediaType,omitempty"`
	ArtifactType string `json:"artifactType,omitempty"`
	// Config is nil when the body has none (an index, or an artifact without one), so that an
	// absent config is told from one without a digest.
	Config *Descriptor  `json:"config,omitempty"`
	Layers []Descriptor `json:"layers,omitempty"`
	// Blobs are the content of an artifact manifest as drafted before OCI 1.1
	// (application/vnd.oci.artifact.manifest.v1+json), which registries may still hold.
	Blobs     []Descriptor `json:"blobs,omitempty"`
	Manifests []Descriptor `json:"manifests,omitempty"`
	// Subject is the manifest this one refers to (a signature's image, say): it puts this
	// manifest in the subject's referrers.
	Subject     *Descriptor       `json:"subject,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// IsIndex reports whether the body is an index by its shape, whatever its mediaType says: it
// has a manifests list (an empty one included).
func (m *Manifest) IsIndex() bool { return m.Manifests != nil }

// Index is an OCI image index as Shoal writes one: a referrers list. Manifests is always
// written, as "[]" when empty: the image spec requires the property.
type Index struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Manifests     []Descriptor      `json:"manifests"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}
