package registryapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/errdefs"
)

// serveUpload answers /v2/<name>/blobs/uploads/[<id>]: POST opens a session (or pushes a whole
// blob with ?digest=, or mounts one with ?mount=), PATCH appends a chunk, PUT appends an optional
// last chunk and commits, GET reports progress, DELETE cancels.
func (s *Server) serveUpload(w *statusWriter, r *http.Request, rt route) {
	if rt.ref == "" {
		if r.Method != http.MethodPost {
			WriteError(w, r, newError(http.StatusMethodNotAllowed, CodeUnsupported, "uploads start with POST"))
			return
		}
		s.startUpload(w, r, rt.name)
		return
	}
	if !validUploadID(rt.ref) {
		WriteError(w, r, newError(http.StatusNotFound, CodeBlobUploadUnknown, "blob upload unknown to registry"))
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		size, err := s.pusher.UploadSize(r.Context(), rt.name, rt.ref)
		if err != nil {
			WriteError(w, r, pushError(err, CodeBlobUploadUnknown, CodeBlobUploadInvalid))
			return
		}
		uploadHeaders(w, rt.name, rt.ref, size)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		if _, ok := s.appendChunk(w, r, rt.name, rt.ref); !ok {
			return
		}
		w.WriteHeader(http.StatusAccepted)
	case http.MethodPut:
		s.finishUpload(w, r, rt.name, rt.ref)
	case http.MethodDelete:
		if err := s.pusher.CancelUpload(r.Context(), rt.name, rt.ref); err != nil {
			WriteError(w, r, pushError(err, CodeBlobUploadUnknown, CodeBlobUploadInvalid))
			return
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusNoContent)
	default:
		WriteError(w, r, newError(http.StatusMethodNotAllowed, CodeUnsupported, "method not allowed on an upload"))
	}
}

// validUploadID bounds what an upload id may be before it reaches the Pusher.
func validUploadID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// uploadHeaders sets what every answer about a live session carries: where to send the next
// request and how many bytes the session holds (Range is inclusive; "0-0" for an empty one, as
// distribution answers).
func uploadHeaders(w http.ResponseWriter, repo, id string, size int64) {
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/uploads/"+id)
	h.Set("Docker-Upload-UUID", id)
	h.Set("Range", fmt.Sprintf("0-%d", max(size-1, 0)))
	h.Set("Content-Length", "0")
}

func blobCreated(w http.ResponseWriter, repo string, d digest.Digest) {
	h := w.Header()
	h.Set("Location", "/v2/"+repo+"/blobs/"+d.String())
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) startUpload(w *statusWriter, r *http.Request, repo string) {
	q := r.URL.Query()
	ctx := r.Context()
	if m := q.Get("mount"); m != "" {
		d, err := parseDigest(m)
		if err != nil {
			WriteError(w, r, pushError(err, CodeBlobUnknown, CodeDigestInvalid))
			return
		}
		from := q.Get("from")
		if from != "" {
			if e := validateName(from); e != nil {
				WriteError(w, r, e)
				return
			}
		}
		err = s.pusher.MountBlob(ctx, repo, from, d)
		switch {
		case err == nil:
			s.log.Info("blob mounted", "repo", repo, "from", from, "digest", d)
			blobCreated(w, repo, d)
			return
		case !errors.Is(err, errdefs.ErrNotFound):
			WriteError(w, r, pushError(err, CodeBlobUnknown, CodeDigestInvalid))
			return
		}
		// Not mountable: the client uploads instead, in the session opened below.
	}
	if ds, ok := q["digest"]; ok {
		s.pushWhole(w, r, repo, ds[0])
		return
	}
	drain(r)
	id, err := s.pusher.StartUpload(ctx, repo, "")
	if err != nil {
		WriteError(w, r, pushError(err, CodeBlobUploadUnknown, CodeBlobUploadInvalid))
		return
	}
	uploadHeaders(w, repo, id, 0)
	w.WriteHeader(http.StatusAccepted)
}

// pushWhole is the monolithic upload: POST ?digest= with the blob as body.
func (s *Server) pushWhole(w *statusWriter, r *http.Request, repo, ds string) {
	ctx := r.Context()
	d, err := parseDigest(ds)
	if err != nil {
		WriteError(w, r, pushError(err, CodeBlobUnknown, CodeDigestInvalid))
		return
	}
	id, err := s.pusher.StartUpload(ctx, repo, d.Algorithm())
	if err != nil {
		WriteError(w, r, pushError(err, CodeBlobUploadUnknown, CodeBlobUploadInvalid))
		return
	}
	n, err := s.pusher.WriteUpload(ctx, repo, id, 0, r.Body)
	if err == nil && r.ContentLength >= 0 && n != r.ContentLength {
		err = fmt.Errorf("got %d of %d bytes: %w", n, r.ContentLength, errdefs.ErrInvalid)
	}
	if err != nil {
		_ = s.pusher.CancelUpload(ctx, repo, id)
		WriteError(w, r, pushError(err, CodeBlobUploadUnknown, CodeSizeInvalid))
		return
	}
	if _, err := s.pusher.FinishUpload(ctx, repo, id, d); err != nil {
		WriteError(w, r, pushError(err, CodeBlobUploadUnknown, CodeBlobUploadInvalid))
		return
	}
	s.log.Info("blob pushed", "repo", repo, "digest", d, "bytes", n)
	blobCreated(w, repo, d)
}

// appendChunk writes the request body to the session. With Content-Range the chunk must start at
// the session's end and the body must be exactly the range; without it the body is appended.
// On failure it has answered the client and ok is false; on success the upload headers are set.
func (s *Server) appendChunk(w *statusWriter, r *http.Request, repo, id string) (size int64, ok bool) {
	ctx := r.Context()
	off, want := int64(-1), int64(-1)
	body := io.Reader(r.Body)
	if cr := r.Header.Get("Content-Range"); cr != "" {
		start, end, valid := parseContentRange(cr)
		if !valid {
			s.rangeRefused(w, r, repo, id)
			return 0, false
		}
		off, want = start, end-start+1
		if r.ContentLength >= 0 && r.ContentLength != want {
			WriteError(w, r, newError(http.StatusBadRequest, CodeSizeInvalid, "Content-Length differs from the Content-Range"))
			return 0, false
		}
		body = io.LimitReader(r.Body, want)
	}
	n, err := s.pusher.WriteUpload(ctx, repo, id, off, body)
	var re *UploadRangeError
	switch {
	case errors.As(err, &re):
		s.rangeRefused(w, r, repo, id)
		return 0, false
	case err != nil:
		WriteError(w, r, pushError(err, CodeBlobUploadUnknown, CodeBlobUploadInvalid))
		return 0, false
	case want >= 0 && n-off != want:
		uploadHeaders(w, repo, id, n)
		WriteError(w, r, newError(http.StatusBadRequest, CodeSizeInvalid, "the body is shorter than the Content-Range"))
		return 0, false
	}
	uploadHeaders(w, repo, id, n)
	return n, true
}

// rangeRefused answers a chunk that is malformed or out of order with 416 and the session's
// current range, from which the client resumes.
func (s *Server) rangeRefused(w *statusWriter, r *http.Request, repo, id string) {
	size, err := s.pusher.UploadSize(r.Context(), repo, id)
	if err != nil {
		WriteError(w, r, pushError(err, CodeBlobUploadUnknown, CodeBlobUploadInvalid))
		return
	}
	uploadHeaders(w, repo, id, size)
	WriteError(w, r, newError(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "chunks must be uploaded in order, from the end of the upload"))
}

func (s *Server) finishUpload(w *statusWriter, r *http.Request, repo, id string) {
	ctx := r.Context()
	ds := r.URL.Query().Get("digest")
	d, err := parseDigest(ds)
	if err != nil {
		WriteError(w, r, pushError(err, CodeBlobUnknown, CodeDigestInvalid))
		return
	}
	if r.ContentLength != 0 || r.Header.Get("Content-Range") != "" {
		if _, ok := s.appendChunk(w, r, repo, id); !ok {
			return
		}
	}
	size, err := s.pusher.FinishUpload(ctx, repo, id, d)
	if err != nil {
		for _, k := range []string{"Location", "Range", "Docker-Upload-UUID"} {
			w.Header().Del(k)
		}
		s.log.Info("blob upload refused", "repo", repo, "digest", d, "err", err)
		WriteError(w, r, pushError(err, CodeBlobUploadUnknown, CodeBlobUploadInvalid))
		return
	}
	for _, k := range []string{"Range", "Docker-Upload-UUID"} {
		w.Header().Del(k)
	}
	s.log.Info("blob pushed", "repo", repo, "digest", d, "bytes", size)
	blobCreated(w, repo, d)
}
