package runtimeconf

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestCheckAgent(t *testing.T) {
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/v2/" {
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(healthy.Close)
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(sick.Close)
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()

	for _, tt := range []struct {
		name     string
		url      string
		problems int
		want     string
	}{
		{"answers", healthy.URL, 0, ""},
		{"unhealthy", sick.URL, 1, "503"},
		{"down", goneURL, 2, "connection refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			n := WriteFindings(&out, CheckAgent(context.Background(), http.DefaultClient, u))
			if n != tt.problems || !strings.Contains(out.String(), tt.want) {
				t.Errorf("%d problems, want %d mentioning %q:\n%s", n, tt.problems, tt.want, out.String())
			}
		})
	}
}

func TestParseRegistry(t *testing.T) {
	for _, tt := range []struct{ in, host, server, err string }{
		{in: "docker.io", host: "docker.io", server: DockerHubServer},
		{in: "index.docker.io", host: "docker.io", server: DockerHubServer},
		{in: "https://registry-1.docker.io", host: "docker.io", server: DockerHubServer},
		{in: "docker.io=https://harbor.corp", host: "docker.io", server: DockerHubServer},
		{in: "ghcr.io", host: "ghcr.io", server: "https://ghcr.io"},
		{in: "http://127.0.0.1:5001", host: "127.0.0.1:5001", server: "http://127.0.0.1:5001"},
		{in: "registry.example:5000", host: "registry.example:5000", server: "https://registry.example:5000"},
		{in: "https://ghcr.io/v2/x", err: "no path"},
		{in: "ftp://x", err: "http"},
		{in: "https://a=b", err: "URL"},
		{in: "docker.io=ghcr.io", err: "upstream"},
		{in: "not a host", err: "want a registry host"},
	} {
		r, err := ParseRegistry(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want one saying %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || r.Host != tt.host || r.Server != tt.server {
			t.Errorf("%q: %+v %v, want %s %s", tt.in, r, err, tt.host, tt.server)
		}
	}
	if _, err := ParseRegistries([]string{"none", "ghcr.io"}); err == nil {
		t.Error("none with a registry accepted")
	}
	if r, _ := ParseRegistries(nil); len(r) != 1 || r[0].Host != "docker.io" {
		t.Errorf("default %v, want docker.io", r)
	}
	for _, bad := range []string{"127.0.0.1:5000", "http://127.0.0.1", "http://127.0.0.1:5000/v2"} {
		if _, err := ParseAgent(bad); err == nil {
			t.Errorf("agent %q accepted", bad)
		}
	}
}
