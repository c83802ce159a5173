package benchproc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// What a shoal process tells about itself besides /proc: /shoal/v1/status, /metrics, and the
// blobs its store has committed.

// apiClient asks a shoal process; a process that does not answer within the timeout is stuck.
var apiClient = &http.Client{Timeout: 10 * time.Second}

// api is the client of the process's API: Options.Dial's, or apiClient.
func (s *Shoal) api() *http.Client {
	if s.client != nil {
		return s.client
	}
	return apiClient
}

// ShoalStatus is the part of /shoal/v1/status the benchmarks read.
type ShoalStatus struct {
	PeerID           string   `json:"peerID"`
	ConnectedPeers   []string `json:"connectedPeers"`
	RoutingTableSize int      `json:"routingTableSize"`
	Transfers        []struct {
		Digest string `json:"digest"`
		Source string `json:"source"`
		Bytes  int64  `json:"bytes"`
		Size   int64  `json:"size"`
	} `json:"transfers"`
	Store struct {
		Bytes   int64 `json:"bytes"`
		Objects int64 `json:"objects"`
	} `json:"store"`
}

// Status reads the process's /shoal/v1/status.
func (s *Shoal) Status(ctx context.Context) (ShoalStatus, error) {
	var st ShoalStatus
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/shoal/v1/status", nil)
	resp, err := s.api().Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s status: %s", s, resp.Status)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st)
	return st, err
}

// Metrics reads the process's /metrics and returns, for each of want, the sum of the samples it
// names (0 if there are none). A want is a sample name, which names all of its samples whatever
// their labels (`shoal_origin_errors_total`), or a name with labels, which names the samples
// whose labels include those, as written (`shoal_fetched_bytes_total{source="peer"}`).
func (s *Shoal) Metrics(ctx context.Context, want ...string) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/metrics", nil)
	resp, err := s.api().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s metrics: %s", s, resp.Status)
	}
	out := make(map[string]float64, len(want))
	for _, w := range want {
		out[w] = 0
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		series, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(series, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		name, labels, _ := strings.Cut(series, "{")
		labels = "{" + labels
		for _, w := range want {
			wname, wlabels, labelled := strings.Cut(w, "{")
			wlabels = strings.TrimSuffix(wlabels, "}")
			if wname == name && (!labelled || strings.Contains(labels, "{"+wlabels) || strings.Contains(labels, ","+wlabels)) {
				out[w] += v
			}
		}
	}
	return out, sc.Err()
}

// Metric is Metrics of one want.
func (s *Shoal) Metric(ctx context.Context, want string) (float64, error) {
	m, err := s.Metrics(ctx, want)
	return m[want], err
}

// CommittedPath is where a shoal store in dataDir keeps committed blob d (agent/store's layout).
func CommittedPath(dataDir, d string) string {
	alg, hex, _ := strings.Cut(d, ":")
	return filepath.Join(dataDir, "blobs", alg, hex)
}

// WaitCommitted waits, at most limit, until the store in dataDir has committed blob d of size
// bytes (verified, fsynced, renamed into place), and returns how long that took.
func WaitCommitted(ctx context.Context, dataDir, d string, size int64, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	p := CommittedPath(dataDir, d)
	for {
		if fi, err := os.Stat(p); err == nil && fi.Size() == size {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("blob %s not committed at %s after %s", d, p, limit)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
