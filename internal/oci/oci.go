// Package oci holds what Shoal knows about OCI and Docker manifests, in one place: their media
// types, the Accept list it sends for them, the size it allows them, how it decides a body's
// media type, and the JSON shapes of descriptors, manifests and indexes that it reads and writes.
//
// The shapes are small structs of our own rather than image-spec's or ggcr's: Shoal reads a body
// before it knows whether it is an image manifest, an artifact manifest or an index, so it
// decodes one shape with all their fields (image-spec splits them in two and has no "blobs");
// a config that is absent must stay distinguishable from an empty one (both libraries use a
// value); and digests are go-digest's, as everywhere else in Shoal (ggcr has its own type). The
// platform is ggcr's, for its Satisfies.
package oci

import (
	"encoding/json"
	"slices"
)

// The manifest media types Shoal asks origins for, named once so that no list or comparison
// spells them out again. Docker's deprecated schema 1 is not among them.
const (
	// MediaTypeImageIndex is an OCI image index: a list of manifests, one per platform, or an
	// artifact's referrers.
	MediaTypeImageIndex = "application/vnd.oci.image.index.v1+json"
	// MediaTypeImageManifest is an OCI image manifest: a config and layers, or an artifact.
	MediaTypeImageManifest = "application/vnd.oci.image.manifest.v1+json"
	// MediaTypeDockerManifestList is Docker's form of an index.
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	// MediaTypeDockerManifest is Docker's image manifest, schema 2.
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
)

// MaxManifestSize bounds a manifest, tag list or referrers index held in memory, read from an
// origin, a peer or the store, or pushed, so that a manifest cannot make a node buffer without
// bound. 4 MiB is distribution's default limit.
const MaxManifestSize = 4 << 20

// manifestTypes backs ManifestTypes and IsManifestType.
var manifestTypes = []string{
	MediaTypeImageIndex,
	MediaTypeImageManifest,
	MediaTypeDockerManifestList,
	MediaTypeDockerManifest,
}

// ManifestTypes is the Accept list Shoal sends for a manifest it must have whatever its form: by
// digest (a digest names one manifest, and some registries refuse a type the request did not
// accept) or to walk an image. It is a new slice each call, so a caller may append to it.
func ManifestTypes() []string { return slices.Clone(manifestTypes) }

// IsManifestType reports whether mt is one of ManifestTypes: a manifest form Shoal understands,
// as opposed to a blob's media type or an unknown manifest form.
func IsManifestType(mt string) bool { return slices.Contains(manifestTypes, mt) }

// IsIndexType reports whether mt names an index (OCI's or Docker's manifest list), whose
// entries are manifests rather than blobs.
func IsIndexType(mt string) bool {
	return mt == MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

// ManifestMediaType decides the media type of a manifest body that arrived with a claimed type
// that nothing vouches for (a peer's, say). The digest covers the body, not the claim, so the
// body's own mediaType field wins; the claim is taken only when the body has none and its shape
// fits the claim: an index claim for a body with manifests, any other claim for one without. It
// returns "" when the body is not a JSON object of manifest shape or nothing decides the type.
func ManifestMediaType(body []byte, claimed string) string {
	// A probe of its own rather than Manifest: only these fields may make the body unreadable.
	var m struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
		Layers    []json.RawMessage `json:"layers"`
	}
	if json.Unmarshal(body, &m) != nil {
		return ""
	}
	if m.MediaType != "" {
		return m.MediaType
	}
	isIndex := m.Manifests != nil
	switch {
	case claimed == "":
		return ""
	case IsIndexType(claimed):
		if isIndex {
			return claimed
		}
	case !isIndex:
		return claimed
	}
	return ""
}
