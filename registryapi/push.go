package registryapi

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/names"
	"github.com/shoal-oci/shoal/internal/oci"
)

// WithPush makes the server accept pushes and deletes into p (distribution-spec "Push" and
// "Content Management"). Without it those routes answer 405 UNSUPPORTED.
func WithPush(p Pusher) Option { return func(s *Server) { s.pusher = p } }

// servePush answers the routes that change content: uploads, manifest PUT, deletes.
func (s *Server) servePush(w *statusWriter, r *http.Request, rt route) {
	switch {
	case rt.kind == epUpload:
		s.serveUpload(w, r, rt)
	case rt.kind == epManifest && r.Method == http.MethodPut:
		s.putManifest(w, r, rt.name, rt.ref)
	case rt.kind == epManifest && r.Method == http.MethodDelete:
		s.deleteManifest(w, r, rt.name, rt.ref)
	case rt.kind == epBlob && r.Method == http.MethodDelete:
		s.deleteBlob(w, r, rt.name, rt.ref)
	default:
		WriteError(w, r, newError(http.StatusMethodNotAllowed, CodeUnsupported, "method not allowed on this endpoint"))
	}
}

// pushError maps an error of a Pusher to the OCI error the client sees. notFound is the code for
// errdefs.ErrNotFound and invalid the one for errdefs.ErrInvalid, both depending on the route.
func pushError(err error, notFound, invalid string) *Error {
	var oe *Error
	var re *UploadRangeError
	switch {
	case errors.As(err, &oe):
		return oe
	case errors.Is(err, errdefs.ErrNoSpace):
		return noSpace()
	case errors.As(err, &re):
		return newError(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "chunks must be uploaded in order, from the end of the upload")
	case errors.Is(err, ErrUploadUnknown):
		return newError(http.StatusNotFound, CodeBlobUploadUnknown, "blob upload unknown to registry")
	case errors.Is(err, ErrManifestBlobUnknown):
		return newError(http.StatusBadRequest, CodeManifestBlobUnkwn, "manifest references a blob or manifest unknown to the repository")
	case errors.Is(err, ErrManifestInvalid):
		return newError(http.StatusBadRequest, CodeManifestInvalid, "manifest invalid")
	case errors.Is(err, errdefs.ErrDigestMismatch):
		return newError(http.StatusBadRequest, CodeDigestInvalid, "content does not match its digest")
	case errors.Is(err, errdefs.ErrTooLarge):
		return newError(http.StatusRequestEntityTooLarge, CodeSizeInvalid, "content exceeds the size limit")
	case errors.Is(err, errdefs.ErrTooManyRequests):
		return newError(http.StatusTooManyRequests, CodeTooManyRequests, "too many uploads in progress")
	case errors.Is(err, errdefs.ErrUnsupported):
		return newError(http.StatusMethodNotAllowed, CodeUnsupported, "the operation is not enabled on this registry")
	case errors.Is(err, errdefs.ErrInvalid):
		return newError(http.StatusBadRequest, invalid, "invalid request")
	case errors.Is(err, errdefs.ErrNotFound):
		return toError(err, notFound)
	default:
		return newError(http.StatusInternalServerError, CodeUnknown, "internal error")
	}
}

func (s *Server) putManifest(w *statusWriter, r *http.Request, repo, refStr string) {
	ref, err := parseReference(refStr)
	if err != nil {
		WriteError(w, r, pushError(err, CodeManifestUnknown, CodeManifestInvalid))
		return
	}
	var tags []string
	if ref.tag != "" {
		tags = append(tags, ref.tag)
	}
	for _, tag := range r.URL.Query()["tag"] {
		if !names.ValidTag(tag) {
			WriteError(w, r, &Error{Status: http.StatusBadRequest, Code: CodeManifestInvalid, Message: "invalid tag", Detail: "tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"})
			return
		}
		tags = append(tags, tag)
	}
	tooLarge := newError(http.StatusRequestEntityTooLarge, CodeSizeInvalid, "manifests are limited to 4 MiB")
	if r.ContentLength > oci.MaxManifestSize {
		WriteError(w, r, tooLarge)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, oci.MaxManifestSize+1))
	if err != nil {
		WriteError(w, r, newError(http.StatusBadRequest, CodeManifestInvalid, "could not read the manifest"))
		return
	}
	if len(body) > oci.MaxManifestSize {
		WriteError(w, r, tooLarge)
		return
	}
	invalid := func(msg string) { WriteError(w, r, newError(http.StatusBadRequest, CodeManifestInvalid, msg)) }
	// The edge reads the media type the manifest declares and its subject (echoed in
	// OCI-Subject); the Pusher checks the rest.
	var f oci.Manifest
	if err := json.Unmarshal(body, &f); err != nil {
		invalid("the manifest is not a JSON object")
		return
	}
	mt := f.MediaType
	if ct := r.Header.Get("Content-Type"); ct != "" {
		parsed, _, err := mime.ParseMediaType(ct)
		if err != nil {
			invalid("malformed Content-Type")
			return
		}
		if f.MediaType != "" && f.MediaType != parsed {
			invalid("the Content-Type differs from the manifest's mediaType")
			return
		}
		mt = parsed
	}
	if mt == "" {
		invalid("the manifest's media type is missing: send it as Content-Type")
		return
	}
	if !oci.IsManifestType(mt) {
		// Only what can be served back: manifests are served with their media type.
		invalid("unsupported manifest media type: want an OCI image manifest or index, or a Docker schema 2 manifest or list")
		return
	}
	d := ref.digest
	if d == "" {
		d = digest.FromBytes(body)
	} else if d.Algorithm().FromBytes(body) != d {
		WriteError(w, r, newError(http.StatusBadRequest, CodeDigestInvalid, "the manifest does not match the digest it was pushed by"))
		return
	}
	log := s.log.With("repo", repo, "ref", ref.String(), "digest", d)
	if err := s.pusher.PutManifest(r.Context(), repo, tags, &Manifest{MediaType: mt, Digest: d, Body: body, Source: "push"}); err != nil {
		log.Info("manifest push refused", "err", err)
		WriteError(w, r, pushError(err, CodeManifestUnknown, CodeManifestInvalid))
		return
	}
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/manifests/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	for _, tag := range tags {
		h.Add("OCI-Tag", tag)
	}
	if f.Subject != nil && f.Subject.Digest != "" {
		h.Set("OCI-Subject", f.Subject.Digest.String())
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	log.Info("manifest pushed", "media_type", mt, "bytes", len(body), "tags", tags)
}

func (s *Server) deleteManifest(w *statusWriter, r *http.Request, repo, refStr string) {
	ref, err := parseReference(refStr)
	if err != nil {
		WriteError(w, r, pushError(err, CodeManifestUnknown, CodeManifestInvalid))
		return
	}
	if ref.digest != "" {
		err = s.pusher.DeleteManifest(r.Context(), repo, ref.digest)
	} else {
		err = s.pusher.DeleteTag(r.Context(), repo, ref.tag)
	}
	if err != nil {
		WriteError(w, r, pushError(err, CodeManifestUnknown, CodeManifestInvalid))
		return
	}
	s.log.Info("manifest deleted", "repo", repo, "ref", ref.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) deleteBlob(w *statusWriter, r *http.Request, repo, ref string) {
	d, err := parseDigest(ref)
	if err != nil {
		WriteError(w, r, pushError(err, CodeBlobUnknown, CodeDigestInvalid))
		return
	}
	if err := s.pusher.DeleteBlob(r.Context(), repo, d); err != nil {
		WriteError(w, r, pushError(err, CodeBlobUnknown, CodeDigestInvalid))
		return
	}
	s.log.Info("blob deleted", "repo", repo, "digest", d)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}

// drain reads what is left of a request body the handler does not use, up to a bound, so the
// connection can be reused; beyond the bound the server closes it.
func drain(r *http.Request) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
}
