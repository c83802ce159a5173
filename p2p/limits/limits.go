// Package limits holds the resource and connection limits of a Shoal libp2p host: how many
// connections it keeps, how much memory and how many file descriptors libp2p may use.
package limits

import (
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/pbnjay/memory"
)

// Connection manager watermarks: trimming starts above connHigh and goes down to connLow. A node needs
// about 20·log2(N/20) DHT connections plus its transfer peers; 400 leaves room for both in clusters of
// thousands, and peers with transfers in flight are protected (p2p.Node.Protect) so trimming never cuts them.
const (
	connLow   = 400
	connHigh  = 600
	connGrace = time.Minute
)

// Resource manager limits. libp2p scales its defaults with a memory budget; Shoal gives it 1/8 of the
// machine clamped to [256 MiB, 1 GiB] (at 1 GiB: 192 MiB per peer for yamux windows, 1.1 GiB in all) and
// then sets the connection counts itself, because the defaults are tuned for a public node that must
// shed strangers, not for a cluster where every node may dial one seed at the same moment.
const (
	rcmgrMemoryMin = 256 << 20
	rcmgrMemoryMax = 1 << 30

	// systemConns must stay above connHigh so that the connection manager, not the resource manager,
	// decides which connections go.
	systemConns         = 1024
	systemConnsInbound  = 768
	systemConnsOutbound = 768
	// transientConns bounds connections still in their handshake. libp2p's default (48 to 80 inbound
	// here) made 20 of 98 simultaneous joins to one bootstrap node fail; a rollout of a large cluster
	// starts hundreds of nodes against the same seeds.
	transientConns         = 768
	transientConnsInbound  = 512
	transientConnsOutbound = 256
)

// ResourceManager builds the resource manager with Shoal's limits. Metrics are reported only when
// metricsOn (they go to the registerer libp2p is given).
func ResourceManager(metricsOn bool) (network.ResourceManager, error) {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	budget := int64(memory.TotalMemory() / 8)
	budget = max(rcmgrMemoryMin, min(budget, rcmgrMemoryMax))
	concrete := scaling.Scale(budget, fdBudget())
	limits := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns:         systemConns,
			ConnsInbound:  systemConnsInbound,
			ConnsOutbound: systemConnsOutbound,
		},
		Transient: rcmgr.ResourceLimits{
			Conns:         transientConns,
			ConnsInbound:  transientConnsInbound,
			ConnsOutbound: transientConnsOutbound,
		},
	}.Build(concrete)
	var opts []rcmgr.Option
	if !metricsOn {
		opts = append(opts, rcmgr.WithMetricsDisabled())
	}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), opts...)
}

// ConnManager builds the connection manager; Protect/Unprotect go through it.
func ConnManager() (*connmgr.BasicConnMgr, error) {
	return connmgr.NewConnManager(connLow, connHigh, connmgr.WithGracePeriod(connGrace))
}
