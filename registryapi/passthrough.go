package registryapi

import (
	"net/http"
	"strconv"

	"github.com/shoal-oci/shoal/internal/names"
)

// maxTagsPage bounds n on tag listing. The spec lets a registry return fewer than asked.
const maxTagsPage = 10000

func (s *Server) serveTags(w *statusWriter, r *http.Request, t Repository) {
	q := r.URL.Query()
	n := 0
	if v := q.Get("n"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		if err != nil || n < 0 {
			WriteError(w, r, &Error{Status: http.StatusBadRequest, Code: CodeUnsupported, Message: "n must be a non-negative integer"})
			return
		}
		if n > maxTagsPage {
			n = maxTagsPage
		}
	}
	last := q.Get("last")
	if last != "" && !names.ValidTag(last) {
		WriteError(w, r, &Error{Status: http.StatusBadRequest, Code: CodeUnsupported, Message: "last must be a tag"})
		return
	}
	p, err := s.backend.Tags(r.Context(), t, n, last)
	if err != nil {
		WriteError(w, r, toError(err, CodeNameUnknown))
		return
	}
	writePassthrough(w, r, p)
}

func (s *Server) serveReferrers(w *statusWriter, r *http.Request, t Repository, ref string) {
	dgst, err := parseDigest(ref)
	if err != nil {
		WriteError(w, r, toError(err, CodeManifestUnknown))
		return
	}
	p, err := s.backend.Referrers(r.Context(), t, dgst, r.URL.Query().Get("artifactType"))
	if err != nil {
		WriteError(w, r, toError(err, CodeManifestUnknown))
		return
	}
	writePassthrough(w, r, p)
}

// writePassthrough relays an origin's listing answer: its status, body and the headers a client
// needs (Link for pagination, OCI-Filters-Applied for referrers).
func writePassthrough(w http.ResponseWriter, r *http.Request, p *Listing) {
	h := w.Header()
	if p.ContentType != "" {
		h.Set("Content-Type", p.ContentType)
	}
	if p.Link != "" {
		h.Set("Link", p.Link)
	}
	if p.FiltersApplied != "" {
		h.Set("OCI-Filters-Applied", p.FiltersApplied)
	}
	h.Set("Content-Length", strconv.Itoa(len(p.Body)))
	w.WriteHeader(p.Status)
	if r.Method == http.MethodGet {
		_, _ = w.Write(p.Body)
	}
}
