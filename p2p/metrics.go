package p2p

import (
	"context"
	"fmt"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's own Prometheus metrics. They always exist (so code never checks for nil) and
// are registered only when Config.Registerer is set.
type metrics struct {
	lookupDuration prometheus.Histogram
	providersFound prometheus.Histogram
	provides       *prometheus.CounterVec

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

func newMetrics(n *Node, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		lookupDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_dht_lookup_duration_seconds",
			Help:    "Duration of DHT provider lookups that went to the network (cache hits and collapsed callers excluded).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 12), // 1 ms .. 2 s, the lookup bound
		}),
		providersFound: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_dht_providers_found",
			Help:    "Providers (other than this node) found per DHT provider lookup.",
			Buckets: prometheus.LinearBuckets(0, 1, maxProviders+1),
		}),
		provides: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_provides_total",
			Help: "Provider records sent to DHT peers (one per digest per peer, on first provide and on every reprovide), by result.",
		}, []string{"result"}),
	}
	m.provides.WithLabelValues("ok")
	m.provides.WithLabelValues("error")
	if reg == nil {
		return m, nil
	}
	m.reg = reg
	for _, c := range []prometheus.Collector{
		m.lookupDuration, m.providersFound, m.provides,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_peers_connected",
			Help: "Peers this node has at least one connection to.",
		}, func() float64 { return float64(len(n.host.Network().Peers())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_dht_routing_table_size",
			Help: "Peers in this node's DHT routing table; 0 means the node is cut off from the cluster.",
		}, func() float64 { return float64(n.RoutingTableSize()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_provided_digests",
			Help: "Digests this node advertises and re-advertises (the reprovider's key set).",
		}, func() float64 { return float64(n.providedCount()) }),
	} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			return nil, fmt.Errorf("p2p metrics: %w", err)
		}
		m.registered = append(m.registered, c)
	}
	return m, nil
}

// unregister removes the node's collectors, so a node created later can register on the same registerer.
func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}

// countingSender counts the provider records the reprovider sends.
type countingSender struct {
	pb.MessageSender
	provides *prometheus.CounterVec
}

func (s countingSender) SendMessage(ctx context.Context, p peer.ID, m *pb.Message) error {
	err := s.MessageSender.SendMessage(ctx, p, m)
	if m.GetType() == pb.Message_ADD_PROVIDER {
		if err != nil {
			s.provides.WithLabelValues("error").Inc()
		} else {
			s.provides.WithLabelValues("ok").Inc()
		}
	}
	return err
}
