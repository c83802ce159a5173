package agent

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shoal-oci/shoal/agent/fetch"
	"github.com/shoal-oci/shoal/agent/resolve"
	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/agent/swarm"
	"github.com/shoal-oci/shoal/p2p/transfer"
	"github.com/shoal-oci/shoal/registryapi/origin"
)

// metrics are the node's instruments, defined in one place and handed to the parts that count.
type metrics struct {
	originRequests *prometheus.CounterVec
	originErrors   *prometheus.CounterVec
	originDuration *prometheus.HistogramVec
	fetchDuration  *prometheus.HistogramVec
	fetchedBytes   *prometheus.CounterVec
	verifyFailures *prometheus.CounterVec
	staleTags      prometheus.Counter
	inflight       prometheus.Gauge
	evictedBytes   prometheus.Counter

	peerVerifyFailures *prometheus.CounterVec
	peerServed         *prometheus.CounterVec
	peerServedBytes    prometheus.Counter
	coordinated        prometheus.Counter
	accessDecisions    *prometheus.CounterVec
	fetchProviders     prometheus.Histogram
	firstByteTimeouts  prometheus.Counter
}

var (
	_ origin.Observer   = (*metrics)(nil)
	_ transfer.Observer = (*metrics)(nil)
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		originRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_requests_total",
			Help: "Requests to upstream registries by registry, operation and status code (\"error\" when there was no answer).",
		}, []string{"registry", "op", "code"}),
		originErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_origin_errors_total",
			Help: "Upstream requests that failed: no answer, or a 5xx or 429 status.",
		}, []string{"registry", "op"}),
		originDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_origin_request_duration_seconds",
			Help:    "Time to the upstream's answer (headers), by operation.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"op"}),
		fetchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_fetch_duration_seconds",
			Help:    "Time to fetch, verify and store a whole blob, by source.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 10),
		}, []string{"source"}),
		fetchedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_fetched_bytes_total",
			Help: "Blob bytes received from sources other than the local store.",
		}, []string{"source"}),
		verifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_verification_failures_total",
			Help: "Content discarded because it did not match its digest, by source.",
		}, []string{"source"}),
		staleTags: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_stale_tag_resolutions_total",
			Help: "Tags answered from the last known resolution because the origin was unreachable.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_fetches_in_flight",
			Help: "Blob fetches in progress.",
		}),
		peerVerifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_peer_verification_failures_total",
			Help: "Content from a peer that failed verification, by peer ID.",
		}, []string{"peer"}),
		peerServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_peer_requests_served_total",
			Help: "Requests from peers answered, by operation and status.",
		}, []string{"op", "code"}),
		fetchProviders: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_fetch_providers",
			Help:    "Peers that supplied chunks of one blob fetch.",
			Buckets: []float64{1, 2, 3, 4, 6, 8},
		}),
		coordinated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_coordinator_pulls_total",
			Help: "Requests from peers to fetch a blob from the origin for the cluster, as its coordinator.",
		}),
		peerServedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_peer_served_bytes_total",
			Help: "Content bytes sent to peers.",
		}),
		accessDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_private_access_decisions_total",
			Help: "Decisions on requests for private repositories and for digests known as private content, by result (accepted, cached, refused, no_credential, node_wide, not_listed, offline_window, unknown, no_repository).",
		}, []string{"result"}),
		evictedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_store_evicted_bytes_total",
			Help: "Bytes of least recently used content removed to keep the store under --max-store-size.",
		}),
		firstByteTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_http_first_byte_timeouts_total",
			Help: "Pulls answered 503 because their answer had not begun within --first-byte-timeout.",
		}),
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.originRequests, m.originErrors, m.originDuration, m.fetchDuration,
		m.fetchedBytes, m.verifyFailures, m.staleTags, m.inflight, m.evictedBytes,
		m.peerVerifyFailures, m.peerServed, m.peerServedBytes, m.coordinated, m.fetchProviders,
		m.accessDecisions, m.firstByteTimeouts)
	return m
}

func (m *metrics) fetch() fetch.Metrics {
	return fetch.Metrics{Duration: m.fetchDuration, Bytes: m.fetchedBytes, VerifyFailures: m.verifyFailures, InFlight: m.inflight}
}

func (m *metrics) swarm() swarm.Metrics {
	return swarm.Metrics{Bytes: m.fetchedBytes.WithLabelValues("peer"), VerifyFailures: m.verifyFailures.WithLabelValues("peer"),
		PeerVerifyFailures: m.peerVerifyFailures, Providers: m.fetchProviders}
}

func (m *metrics) resolve() resolve.Metrics {
	return resolve.Metrics{Stale: m.staleTags, OriginVerifyFailures: m.verifyFailures.WithLabelValues("origin")}
}

func (m *metrics) registerStore(reg prometheus.Registerer, st *store.Store) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_store_bytes",
			Help: "Bytes the store holds, counted toward its limit: committed content and content being written.",
		}, func() float64 { b, _ := st.Usage(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_store_objects",
			Help: "Committed blobs and manifests in the store.",
		}, func() float64 { _, n := st.Usage(); return float64(n) }),
	)
}

// OriginRequest implements origin.Observer.
func (m *metrics) OriginRequest(registry, op string, status int, _ error, d time.Duration) {
	code := "error"
	if status > 0 {
		code = strconv.Itoa(status)
	}
	m.originRequests.WithLabelValues(registry, op, code).Inc()
	m.originDuration.WithLabelValues(op).Observe(d.Seconds())
	if status == 0 || status >= 500 || status == http.StatusTooManyRequests {
		m.originErrors.WithLabelValues(registry, op).Inc()
	}
}

// Served implements transfer.Observer.
func (m *metrics) Served(op string, status int, bytes int64) {
	m.peerServed.WithLabelValues(op, strconv.Itoa(status)).Inc()
	m.peerServedBytes.Add(float64(bytes))
}
