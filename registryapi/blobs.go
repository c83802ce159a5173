package registryapi

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

func (s *Server) serveBlob(w *statusWriter, r *http.Request, t Repository, ref string) {
	dgst, err := parseDigest(ref)
	if err != nil {
		WriteError(w, r, toError(err, CodeBlobUnknown))
		return
	}
	log := s.log.With("repo", t.Name, "digest", dgst, "registry", t.Registry)
	h := w.Header()
	h.Set("Docker-Content-Digest", dgst.String())
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")

	if r.Method == http.MethodHead {
		size, err := s.backend.StatBlob(r.Context(), t, dgst)
		if err != nil {
			log.Debug("blob stat failed", "err", err)
			WriteError(w, r, toError(err, CodeBlobUnknown))
			return
		}
		if size >= 0 { // an origin may answer HEAD without a length
			h.Set("Content-Length", strconv.FormatInt(size, 10))
		}
		w.WriteHeader(http.StatusOK)
		return
	}

	start := time.Now()
	blob, err := s.backend.OpenBlob(r.Context(), t, dgst)
	if err != nil {
		log.Info("blob unavailable", "err", err)
		WriteError(w, r, toError(err, CodeBlobUnknown))
		return
	}
	defer blob.Close()
	size := blob.Size()
	br, partial, rerr := parseRange(r.Header.Get("Range"), size)
	if rerr != nil {
		if size >= 0 {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		}
		WriteError(w, r, rerr)
		return
	}
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", br.off, br.off+br.n-1, size))
		h.Set("Content-Length", strconv.FormatInt(br.n, 10))
	} else {
		br = byteRange{off: 0, n: size}
		if size >= 0 {
			h.Set("Content-Length", strconv.FormatInt(size, 10))
		}
	}
	w.WriteHeader(status)
	n, err := blob.CopyRange(r.Context(), w, br.off, br.n)
	s.metrics.servedBytes.WithLabelValues(blob.Source()).Add(float64(n))
	if err != nil {
		if r.Context().Err() == nil {
			// The bytes could not be completed or verified: abort so the client sees a broken
			// response, never a short or wrong blob that looks whole.
			log.Warn("blob response aborted", "source", blob.Source(), "bytes", n, "err", err)
			w.aborted = true
			panic(http.ErrAbortHandler)
		}
		log.Debug("client went away", "source", blob.Source(), "bytes", n)
		return
	}
	log.Debug("blob served", "source", blob.Source(), "bytes", n, "duration", time.Since(start))
}
