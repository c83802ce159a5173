package registryapi

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	servedBytes *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_http_requests_total",
			Help: "Requests to the /v2 API by endpoint, method and status code (\"aborted\" for responses cut short because content failed).",
		}, []string{"endpoint", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_http_request_duration_seconds",
			Help:    "Time to answer /v2 requests, by endpoint, including the body.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"endpoint"}),
		servedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_served_bytes_total",
			Help: "Manifest and blob bytes sent to local clients, by where they came from (cache, origin).",
		}, []string{"source"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.servedBytes)
	}
	return m
}

func (m *metrics) observeRequest(endpoint, method, code string, d time.Duration) {
	m.requests.WithLabelValues(endpoint, methodLabel(method), code).Inc()
	m.duration.WithLabelValues(endpoint).Observe(d.Seconds())
}

// methodLabel keeps the method label to a fixed set: a client may send any token as a method,
// and each distinct label value is a series held for the life of the process.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}
