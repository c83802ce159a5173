package runtimeconf

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// AgentTimeout bounds each request CheckAgent makes.
const AgentTimeout = 5 * time.Second

// CheckAgent asks the agent at u for /healthz and /v2/, the two a runtime's pull depends on,
// and says whether each answered 200.
func CheckAgent(ctx context.Context, client *http.Client, u *url.URL) []Finding {
	var out []Finding
	for _, p := range []string{"/healthz", "/v2/"} {
		target := u.JoinPath(p).String()
		if err := get(ctx, client, target); err != nil {
			out = append(out, Problemf(
				"start the agent on this node (`shoal agent --listen "+u.Host+"`, or check its pod and logs);\n"+
					"meanwhile the runtime goes to each registry directly.",
				"the agent does not answer GET %s: %v", target, err))
			continue
		}
		out = append(out, OK("the agent answers GET %s", target))
	}
	return out
}

func get(ctx context.Context, client *http.Client, target string) error {
	ctx, cancel := context.WithTimeout(ctx, AgentTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}
