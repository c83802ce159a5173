package pins

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"sync"

	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/reference"
)

// Admin serves the admin endpoints of a node (agent or seed), behind the agent's admin check:
//
//	POST   /shoal/v1/preheat        {"ref":..., "platforms":[...], "allPlatforms":bool}
//	POST   /shoal/v1/pins           the same, plus "replicas": fetch, then pin
//	GET    /shoal/v1/pins           the node's pins
//	DELETE /shoal/v1/pins?ref=REF   unpin (on a seed: on every seed)
//
// Preheat and pin answer 200 with a stream of JSON lines (Progress) as the work goes on: the
// last line's event is "done" or "error". A request that cannot start gets a 4xx with an error.
type Admin struct {
	pins *Pins
	// pinOnPreheat makes preheat pin what it fetched (seeds: their content is pinned).
	pinOnPreheat bool
}

// NewAdmin returns the admin endpoints over pins; with pinOnPreheat (a seed's), a preheat pins
// what it fetched.
func NewAdmin(pins *Pins, pinOnPreheat bool) *Admin {
	return &Admin{pins: pins, pinOnPreheat: pinOnPreheat}
}

// Routes are the admin handlers by ServeMux pattern, served behind the node's admin check.
func (ad *Admin) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /shoal/v1/preheat": http.HandlerFunc(ad.preheat),
		"POST /shoal/v1/pins":    http.HandlerFunc(ad.addPin),
		"GET /shoal/v1/pins":     http.HandlerFunc(ad.listPins),
		"DELETE /shoal/v1/pins":  http.HandlerFunc(ad.removePin),
	}
}

// maxAdminBody bounds a request body.
const maxAdminBody = 64 << 10

func (ad *Admin) preheat(w http.ResponseWriter, r *http.Request) {
	ad.run(w, r, ad.pinOnPreheat)
}

func (ad *Admin) addPin(w http.ResponseWriter, r *http.Request) {
	ad.run(w, r, true)
}

// run decodes a preheat request and streams its progress.
func (ad *Admin) run(w http.ResponseWriter, r *http.Request, pin bool) {
	// A JSON body only: a web page cannot send one across origins without a preflight, so a
	// browser on a node whose admin endpoints are open on loopback cannot be made to start work.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeJSONError(w, http.StatusUnsupportedMediaType, "want Content-Type: application/json")
		return
	}
	var req PreheatRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "request body: want JSON {\"ref\": ...}: "+err.Error())
		return
	}
	if _, err := reference.Parse(req.Ref); err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := ParsePlatforms(req); err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	report := func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(p)
		if flusher != nil {
			flusher.Flush()
		}
	}
	var (
		got Pin
		err error
	)
	if pin {
		got, err = ad.pins.Add(r.Context(), req, report)
	} else {
		got, err = ad.pins.Preheat(r.Context(), req, report)
	}
	if err != nil {
		report(Progress{Event: "error", Ref: req.Ref, Error: err.Error()})
		return
	}
	blobs := len(got.Digests) - got.Manifests
	report(Progress{Event: "done", Ref: got.Ref, Digest: got.Digest, Manifests: got.Manifests, Blobs: blobs,
		BlobsDone: blobs, Bytes: got.Bytes, BytesDone: got.Bytes, Pinned: pin})
}

func (ad *Admin) listPins(w http.ResponseWriter, _ *http.Request) {
	pins, err := ad.pins.List()
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, "listing pins failed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(pins) // a client gone away is its loss
}

func (ad *Admin) removePin(w http.ResponseWriter, r *http.Request) {
	ref := r.URL.Query().Get("ref")
	found, err := ad.pins.Remove(r.Context(), ref)
	switch {
	case errors.Is(err, errdefs.ErrInvalid):
		writeJSONError(w, http.StatusBadRequest, err.Error())
	case err != nil:
		writeJSONError(w, http.StatusInternalServerError, "unpinning failed")
	case !found:
		writeJSONError(w, http.StatusNotFound, "no pin of "+ref)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
