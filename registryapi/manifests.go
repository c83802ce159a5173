package registryapi

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"

	"github.com/shoal-oci/shoal/internal/oci"
)

func (s *Server) serveManifest(w *statusWriter, r *http.Request, t Repository, refStr string) {
	ref, err := parseReference(refStr)
	if err != nil {
		WriteError(w, r, toError(err, CodeManifestUnknown))
		return
	}
	log := s.log.With("repo", t.Name, "ref", ref.String(), "registry", t.Registry)
	m, err := s.backend.GetManifest(r.Context(), t, ref.String(), acceptList(r.Header))
	if err != nil {
		log.Info("manifest unavailable", "err", err)
		WriteError(w, r, toError(err, CodeManifestUnknown))
		return
	}
	if !oci.IsManifestType(m.MediaType) {
		// A manifest's type comes from its body, which whoever built it chose (a peer's, an
		// origin's, a push's): only the manifest types Shoal knows are served, so that no answer
		// is ever text/html or another type a browser renders. 404 sends a runtime to its next
		// host.
		log.Warn("manifest of an unknown media type refused", "digest", m.Digest, "media_type", m.MediaType, "source", m.Source)
		WriteError(w, r, newError(http.StatusNotFound, CodeManifestUnknown, "the manifest's media type is not a manifest type this registry serves"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", m.MediaType)
	h.Set("Docker-Content-Digest", m.Digest.String())
	h.Set("Content-Length", strconv.Itoa(len(m.Body)))
	h.Set("ETag", `"`+m.Digest.String()+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		n, _ := bytes.NewReader(m.Body).WriteTo(w)
		s.metrics.servedBytes.WithLabelValues(m.Source).Add(float64(n))
	}
	log.Debug("manifest served", "digest", m.Digest, "source", m.Source, "media_type", m.MediaType)
}

// acceptList flattens the client's Accept headers into media types, dropping parameters such
// as q-values: registries treat Accept as a set. The set is normalized to the manifest types
// Shoal knows (oci.NormalizeAccept): what a tag resolves to is recorded per set, and a client
// must not make that grow with every header it invents.
func acceptList(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if mt = strings.TrimSpace(mt); mt != "" {
				out = append(out, mt)
			}
		}
	}
	return oci.NormalizeAccept(out)
}
