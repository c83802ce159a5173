package seed

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoal-oci/shoal/agent/pins"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/p2p"
)

// seedProtocol is how seeds keep pins replicated: one JSON request and one JSON answer per
// stream, both bounded in size and time.
const seedProtocol protocol.ID = "/shoal/seed/1"

const (
	// maxSeedMessage bounds a request or answer (a pin of 10,000 objects is about 800 KB).
	maxSeedMessage = 2 << 20
	// seedRequestTimeout bounds one exchange.
	seedRequestTimeout = 10 * time.Second
)

type seedRequest struct {
	// Op is "holdings" (what do you hold of these pins), "pin" (hold it too) or "unpin".
	Op string `json:"op"`
	// Key is the pin's key (pins.Pin.Key) for unpin; Keys are the pins' keys for holdings.
	Key  string    `json:"key,omitempty"`
	Keys []string  `json:"keys,omitempty"`
	Pin  *pins.Pin `json:"pin,omitempty"`
}

type seedResponse struct {
	OK bool `json:"ok"`
	// Holdings answers holdings, by key; Unpinned says unpin found the pin.
	Holdings map[string]holding `json:"holdings,omitempty"`
	Unpinned bool               `json:"unpinned,omitempty"`
	Error    string             `json:"error,omitempty"`
}

// maxHoldingsKeys bounds one holdings request, so that it and its answer stay within
// maxSeedMessage; more pins take more requests.
const maxHoldingsKeys = 1024

// seedPeer serves and sends the seed protocol.
type seedPeer struct {
	h    host.Host
	node *p2p.Node
	pins *replicator
	log  *slog.Logger
}

func newSeedPeer(node *p2p.Node, log *slog.Logger) *seedPeer {
	return &seedPeer{h: node.Host(), node: node, log: log}
}

// serve answers other seeds from pins.
func (sp *seedPeer) serve(pins *replicator) {
	sp.pins = pins
	sp.h.SetStreamHandler(seedProtocol, sp.handle)
}

func (sp *seedPeer) close() { sp.h.RemoveStreamHandler(seedProtocol) }

func (sp *seedPeer) handle(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(seedRequestTimeout))
	var req seedRequest
	resp := seedResponse{OK: true}
	if err := json.NewDecoder(io.LimitReader(st, maxSeedMessage)).Decode(&req); err != nil {
		_ = st.Reset()
		return
	}
	// Pins are metadata: only a seed the operator authorized may add, remove or ask about
	// them, whatever else it may do as a peer.
	ctx, cancel := context.WithTimeout(context.Background(), seedRequestTimeout)
	defer cancel()
	if from := st.Conn().RemotePeer(); !sp.node.AuthorizedSeed(ctx, from) {
		sp.log.Info("refused a seed protocol request from a peer that is not an authorized seed", "op", truncate(req.Op), "peer", from)
		_ = json.NewEncoder(st).Encode(seedResponse{Error: "not an authorized seed"})
		return
	}
	switch req.Op {
	case "holdings":
		if len(req.Keys) > maxHoldingsKeys {
			resp = seedResponse{Error: fmt.Sprintf("more than %d keys", maxHoldingsKeys)}
			break
		}
		resp.Holdings = map[string]holding{}
		for _, k := range req.Keys {
			if h := sp.pins.holding(k); h.Known {
				resp.Holdings[k] = h
			}
		}
	case "pin":
		if req.Pin == nil {
			resp = seedResponse{Error: "no pin record"}
		} else if err := sp.pins.adopt(*req.Pin); err != nil {
			resp = seedResponse{Error: err.Error()}
		}
	case "unpin":
		found, err := sp.pins.pins.Delete(req.Key)
		if err != nil {
			resp = seedResponse{Error: "recording failed"}
			break
		}
		resp.Unpinned = found
		if found {
			sp.log.Info("unpinned at another seed's request", "pin", req.Key, "from", st.Conn().RemotePeer())
		}
	default:
		resp = seedResponse{Error: fmt.Sprintf("unknown op %q", req.Op)}
	}
	_ = json.NewEncoder(st).Encode(resp)
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32]
	}
	return s
}

// call sends one request to a seed.
func (sp *seedPeer) call(ctx context.Context, p peer.ID, req seedRequest) (seedResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, seedRequestTimeout)
	defer cancel()
	st, err := sp.h.NewStream(ctx, p, seedProtocol)
	if err != nil {
		return seedResponse{}, fmt.Errorf("seed %s: %w", p, errdefs.ErrUnavailable)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	if err := json.NewEncoder(st).Encode(req); err != nil {
		_ = st.Reset()
		return seedResponse{}, fmt.Errorf("seed %s: %w", p, err)
	}
	_ = st.CloseWrite()
	var resp seedResponse
	if err := json.NewDecoder(io.LimitReader(st, maxSeedMessage)).Decode(&resp); err != nil {
		_ = st.Reset()
		return seedResponse{}, fmt.Errorf("seed %s: %w", p, err)
	}
	if !resp.OK {
		return resp, fmt.Errorf("seed %s: %s", p, resp.Error)
	}
	return resp, nil
}

// holdings asks seed p what it holds of the pins of keys, by key (absent: nothing).
func (sp *seedPeer) holdings(ctx context.Context, p peer.ID, keys []string) (map[string]holding, error) {
	out := map[string]holding{}
	for len(keys) > 0 {
		batch := keys[:min(len(keys), maxHoldingsKeys)]
		keys = keys[len(batch):]
		resp, err := sp.call(ctx, p, seedRequest{Op: "holdings", Keys: batch})
		if err != nil {
			return nil, err
		}
		now := time.Now()
		for k, h := range resp.Holdings {
			if h.Created.After(now) {
				h.Created = now // a pin from the future would make every other one outdated
			}
			out[k] = h
		}
	}
	return out, nil
}

func (sp *seedPeer) pin(ctx context.Context, p peer.ID, pin pins.Pin) error {
	_, err := sp.call(ctx, p, seedRequest{Op: "pin", Pin: &pin})
	return err
}

// Unpin asks every other live seed to drop the pin of key, reporting whether any had it
// (pins.Seeds).
func (sp *seedPeer) Unpin(ctx context.Context, key string) bool {
	var wg sync.WaitGroup
	var mu sync.Mutex
	found := false
	for _, s := range sp.node.Seeds(ctx) {
		if s == sp.node.ID() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := sp.call(ctx, s, seedRequest{Op: "unpin", Key: key})
			if err != nil {
				sp.log.Warn("a seed did not drop the pin", "pin", key, "seed", s, "err", err)
				return
			}
			mu.Lock()
			found = found || resp.Unpinned
			mu.Unlock()
		}()
	}
	wg.Wait()
	return found
}
