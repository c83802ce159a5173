package agent

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/opencontainers/go-digest"
)

// Status is the JSON document served at /shoal/v1/status.
type Status struct {
	PeerID           string     `json:"peerID,omitempty"`
	ListenAddrs      []string   `json:"listenAddrs,omitempty"`
	ConnectedPeers   []string   `json:"connectedPeers"`
	RoutingTableSize int        `json:"routingTableSize"`
	Registries       []string   `json:"registries"`
	Store            StoreUsage `json:"store"`
	Transfers        []Transfer `json:"transfers"`
}

// StoreUsage is the committed content of the store.
type StoreUsage struct {
	Bytes   int64 `json:"bytes"`
	Objects int64 `json:"objects"`
}

// Transfer is a blob fetch in flight.
type Transfer struct {
	Digest digest.Digest `json:"digest"`
	Source string        `json:"source"`
	Bytes  int64         `json:"bytes"`
	Size   int64         `json:"size"`
}

// Status reports the node's state.
func (a *Agent) Status() Status {
	st := Status{ConnectedPeers: []string{}, Transfers: []Transfer{}, Registries: a.cfg.Registries}
	if a.node != nil {
		st.PeerID = a.node.ID().String()
		st.ListenAddrs = a.node.Addrs()
		for _, p := range a.node.Peers() {
			st.ConnectedPeers = append(st.ConnectedPeers, p.String())
		}
		sort.Strings(st.ConnectedPeers)
		st.RoutingTableSize = a.node.RoutingTableSize()
	}
	a.mu.Lock()
	if a.store != nil {
		st.Store.Bytes, st.Store.Objects = a.store.Usage()
	}
	for d, f := range a.inflight {
		select {
		case <-f.ready:
		default:
			st.Transfers = append(st.Transfers, Transfer{Digest: d, Size: -1})
			continue
		}
		visible, _, _, _ := f.state()
		st.Transfers = append(st.Transfers, Transfer{Digest: d, Source: f.source, Bytes: visible, Size: f.size})
	}
	a.mu.Unlock()
	sort.Slice(st.Transfers, func(i, j int) bool { return st.Transfers[i].Digest < st.Transfers[j].Digest })
	return st
}

func (a *Agent) serveStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(a.Status())
}
