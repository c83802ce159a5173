package realclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/p2p"
	"github.com/shoal-oci/shoal/p2p/transfer"
	"github.com/shoal-oci/shoal/test/testutil"
)

// exposureCase is one request of a web page (or of a registry client, for the controls) to a
// node's admin endpoints or push API.
type exposureCase struct {
	name   string
	seed   bool // the seed; else the agent
	method string
	path   string
	host   string // Host header; "" is the node's own address
	header map[string]string
	body   string
	status int
	code   string // the OCI error code expected; "" for a control that succeeds
}

// TestBrowserRequestsRefused: a loopback seed and agent without a token (admin and push open
// there) refuse what a web page can make a browser send them: a foreign Host (DNS rebinding), a
// request marked by Origin or Sec-Fetch-Site, and a POST with a content type an HTML form can
// send; each with an OCI error body. Requests shaped like those of crane (application/json),
// containerd and oras (no content type) and shoal still work, and every answer carries
// X-Content-Type-Options: nosniff.
func TestBrowserRequestsRefused(t *testing.T) {
	bin := shoal.Path(t)
	sd := testutil.StartSeed(t, bin, []string{"none"})
	ag := testutil.StartAgent(t, bin, []string{"none"})
	blob, pushed := "hello from a web page", "hello from a registry client"
	blobDigest, pushedDigest := digest.FromString(blob), digest.FromString(pushed)
	preheat := `{"ref":"registry.invalid/x/app:v1"}`
	const uploads = "/v2/site/app/blobs/uploads/"
	jsonCT := map[string]string{"Content-Type": "application/json"}
	with := func(kv ...string) map[string]string {
		h := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}
	cases := []exposureCase{
		// DNS rebinding: the page's requests reach the node under the attacker's name.
		{name: "foreign Host lists pins", seed: true, method: "GET", path: "/shoal/v1/pins", host: "rebind.attacker.example", status: 403, code: "DENIED"},
		{name: "foreign Host with port lists pins", seed: true, method: "GET", path: "/shoal/v1/pins", host: "rebind.attacker.example:5000", status: 403, code: "DENIED"},
		{name: "foreign Host starts a preheat", seed: true, method: "POST", path: "/shoal/v1/preheat", host: "rebind.attacker.example", header: jsonCT, body: preheat, status: 403, code: "DENIED"},
		{name: "foreign Host starts an upload", seed: true, method: "POST", path: uploads, host: "rebind.attacker.example", header: jsonCT, status: 403, code: "DENIED"},
		{name: "foreign Host deletes a pin", seed: true, method: "DELETE", path: "/shoal/v1/pins?ref=x/app:v1", host: "rebind.attacker.example", status: 403, code: "DENIED"},
		{name: "foreign Host on an agent's pins", method: "GET", path: "/shoal/v1/pins", host: "rebind.attacker.example", status: 403, code: "DENIED"},
		{name: "foreign Host on an agent's preheat", method: "POST", path: "/shoal/v1/preheat", host: "rebind.attacker.example", header: jsonCT, body: preheat, status: 403, code: "DENIED"},
		// Requests a browser marks as a page's.
		{name: "cross-site Origin starts an upload", seed: true, method: "POST", path: uploads, header: with("Origin", "http://attacker.example"), status: 403, code: "DENIED"},
		{name: "null Origin starts an upload", seed: true, method: "POST", path: uploads, header: with("Origin", "null"), status: 403, code: "DENIED"},
		{name: "Origin naming the node itself", seed: true, method: "POST", path: uploads, header: with("Origin", "http://127.0.0.1"), status: 403, code: "DENIED"},
		{name: "Sec-Fetch-Site cross-site", seed: true, method: "POST", path: uploads, header: with("Sec-Fetch-Site", "cross-site"), status: 403, code: "DENIED"},
		{name: "Sec-Fetch-Site same-site", seed: true, method: "POST", path: uploads, header: with("Sec-Fetch-Site", "same-site"), status: 403, code: "DENIED"},
		{name: "cross-site JSON preheat", seed: true, method: "POST", path: "/shoal/v1/preheat", header: with("Content-Type", "application/json", "Origin", "http://attacker.example"), body: preheat, status: 403, code: "DENIED"},
		{name: "cross-site pin list", seed: true, method: "GET", path: "/shoal/v1/pins", header: with("Sec-Fetch-Site", "cross-site"), status: 403, code: "DENIED"},
		{name: "cross-site preheat on an agent", method: "POST", path: "/shoal/v1/preheat", header: with("Content-Type", "application/json", "Origin", "http://attacker.example"), body: preheat, status: 403, code: "DENIED"},
		// Simple requests: what a form or a fetch without preflight can send, without any mark.
		{name: "text/plain starts an upload", seed: true, method: "POST", path: uploads, header: with("Content-Type", "text/plain"), status: 415, code: "UNSUPPORTED"},
		{name: "text/plain with charset starts an upload", seed: true, method: "POST", path: uploads, header: with("Content-Type", "text/plain;charset=UTF-8"), status: 415, code: "UNSUPPORTED"},
		{name: "form starts an upload", seed: true, method: "POST", path: uploads, header: with("Content-Type", "application/x-www-form-urlencoded"), body: "a=b", status: 415, code: "UNSUPPORTED"},
		{name: "multipart form starts an upload", seed: true, method: "POST", path: uploads, header: with("Content-Type", "multipart/form-data; boundary=x"), body: "--x--\r\n", status: 415, code: "UNSUPPORTED"},
		{name: "text/plain monolithic upload", seed: true, method: "POST", path: uploads + "?digest=" + blobDigest.String(), header: with("Content-Type", "text/plain"), body: blob, status: 415, code: "UNSUPPORTED"},
		{name: "text/plain preheat", seed: true, method: "POST", path: "/shoal/v1/preheat", header: with("Content-Type", "text/plain"), body: preheat, status: 415, code: "UNSUPPORTED"},
		{name: "text/plain pin", seed: true, method: "POST", path: "/shoal/v1/pins", header: with("Content-Type", "text/plain"), body: preheat, status: 415, code: "UNSUPPORTED"},
		{name: "form preheat on an agent", method: "POST", path: "/shoal/v1/preheat", header: with("Content-Type", "application/x-www-form-urlencoded"), body: "ref=x", status: 415, code: "UNSUPPORTED"},
		// Controls: what registry clients and shoal send is still taken.
		{name: "crane's upload start (application/json)", seed: true, method: "POST", path: uploads, header: jsonCT, status: 202},
		{name: "containerd's and oras' upload start (no content type)", seed: true, method: "POST", path: uploads, status: 202},
		{name: "skopeo's upload start", seed: true, method: "POST", path: uploads, header: with("Docker-Distribution-Api-Version", "registry/2.0"), status: 202},
		{name: "monolithic upload (application/octet-stream)", seed: true, method: "POST", path: uploads + "?digest=" + pushedDigest.String(), header: with("Content-Type", "application/octet-stream"), body: pushed, status: 201},
		{name: "localhost Host", seed: true, method: "POST", path: uploads, host: "localhost", header: jsonCT, status: 202},
		{name: "pins listed by shoal", seed: true, method: "GET", path: "/shoal/v1/pins", status: 200},
		{name: "pins listed from the address bar", seed: true, method: "GET", path: "/shoal/v1/pins", header: with("Sec-Fetch-Site", "none"), status: 200},
		{name: "pulls stay open to pages", seed: true, method: "GET", path: "/v2/", header: with("Origin", "http://attacker.example"), status: 200},
		{name: "agent pins listed by shoal", method: "GET", path: "/shoal/v1/pins", status: 200},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			node := ag
			if tc.seed {
				node = sd
			}
			req, err := http.NewRequestWithContext(ctx, tc.method, node.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q, want nosniff", got)
			}
			if tc.code == "" {
				return
			}
			if code := ociErrorCode(body); code != tc.code {
				t.Errorf("error body %s: code %q, want an OCI error with %q", body, code, tc.code)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("a refused request got Location %s", loc)
			}
		})
	}
	// The refused monolithic upload stored nothing; the accepted one is there.
	for d, want := range map[digest.Digest]int{blobDigest: http.StatusNotFound, pushedDigest: http.StatusOK} {
		resp, err := http.Head(sd.URL + "/v2/site/app/blobs/" + d.String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("HEAD of blob %s after the uploads: %d, want %d", d, resp.StatusCode, want)
		}
	}
}

// ociErrorCode is the first code of an OCI error body, or "".
func ociErrorCode(body []byte) string {
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// TestAllowedHostFlag: a name given with --allowed-host is accepted in Host on the admin
// endpoints and the push API; others are not.
func TestAllowedHostFlag(t *testing.T) {
	sd := testutil.StartSeed(t, shoal.Path(t), []string{"none"}, "--allowed-host", "Seed-1.Example.com")
	for host, want := range map[string]int{
		"seed-1.example.com:5000": http.StatusOK,
		"seed-1.example.com.":     http.StatusOK,
		"seed-2.example.com":      http.StatusForbidden,
		"example.com":             http.StatusForbidden,
		"[::1]:5000":              http.StatusOK,
	} {
		req, _ := http.NewRequest(http.MethodGet, sd.URL+"/shoal/v1/pins", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: status %d, want %d", host, resp.StatusCode, want)
		}
	}
}

// TestManifestMediaTypes: a manifest whose media type is not a manifest type Shoal knows is never
// served with it. A push of one (as Content-Type or in the body) is refused; a lying peer (a real
// libp2p host speaking the content protocol) that holds a manifest declaring text/html, whose
// bytes verify against its digest, gets it refused at the agent's /v2, with nosniff, while its
// well-typed manifest is served.
func TestManifestMediaTypes(t *testing.T) {
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	html := []byte(`{"schemaVersion":2,"mediaType":"text/html","layers":[],"x":"<script>alert(document.domain)</script>"}`)
	htmlDigest := digest.FromBytes(html)

	sd := testutil.StartSeed(t, bin, []string{"none"})
	for _, tc := range []struct {
		name, contentType string
		body              []byte
	}{
		{"Content-Type text/html", "text/html", []byte(`{"schemaVersion":2,"layers":[]}`)},
		{"mediaType text/html in the body", "", html},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, sd.URL+"/v2/site/page/manifests/v1", bytes.NewReader(tc.body))
		if tc.contentType != "" {
			req.Header.Set("Content-Type", tc.contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || ociErrorCode(body) != "MANIFEST_INVALID" {
			t.Errorf("push with %s: %d %s, want 400 MANIFEST_INVALID", tc.name, resp.StatusCode, body)
		}
		get := getManifest(ctx, t, sd.URL+"/v2/site/page/manifests/v1")
		if get.status == http.StatusOK || strings.HasPrefix(get.contentType, "text/") {
			t.Errorf("after the push with %s the seed serves the tag: %d %s", tc.name, get.status, get.contentType)
		}
	}

	// The lying peer: the manifest declaring text/html, and a well-typed one as a control that
	// the agent does fetch from it.
	good := []byte(`{"schemaVersion":2,"mediaType":"` + oci.MediaTypeImageManifest + `","layers":[]}`)
	goodDigest := digest.FromBytes(good)
	mc := transfer.NewMemoryContent()
	mc.Put(htmlDigest, "text/html", html)
	mc.Put(goodDigest, oci.MediaTypeImageManifest, good)
	liar, err := p2p.New(p2p.Config{DataDir: t.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	transfer.NewServer(liar.Host(), mc, nil, nil)
	lctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = liar.Run(lctx) }()
	t.Cleanup(func() { stop(); <-done; liar.Close() })

	ag := testutil.StartAgent(t, bin, []string{"none"}, "--p2p-listen", p2pAddr(t), "--bootstrap", liar.Addrs()[0])
	waitUntil(ctx, t, "the liar to join the agent", func() bool { return liar.RoutingTableSize() > 0 })
	for _, d := range []digest.Digest{goodDigest, htmlDigest} {
		if err := liar.Provide(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	var got manifestAnswer
	waitUntil(ctx, t, "the agent to fetch the control manifest from the peer", func() bool {
		got = getManifest(ctx, t, ag.URL+"/v2/site/page/manifests/"+goodDigest.String())
		return got.status == http.StatusOK
	})
	if got.contentType != oci.MediaTypeImageManifest || got.nosniff != "nosniff" {
		t.Errorf("control manifest served as %q, X-Content-Type-Options %q", got.contentType, got.nosniff)
	}
	got = getManifest(ctx, t, ag.URL+"/v2/site/page/manifests/"+htmlDigest.String())
	if got.status != http.StatusNotFound || ociErrorCode(got.body) != "MANIFEST_UNKNOWN" || !strings.Contains(string(got.body), "media type") {
		t.Errorf("the peer's text/html manifest: %d %q %s, want 404 MANIFEST_UNKNOWN for its media type", got.status, got.contentType, got.body)
	}
	if strings.HasPrefix(got.contentType, "text/") || got.nosniff != "nosniff" {
		t.Errorf("the peer's text/html manifest answered as %q, X-Content-Type-Options %q", got.contentType, got.nosniff)
	}
}

type manifestAnswer struct {
	status               int
	contentType, nosniff string
	body                 []byte
}

func getManifest(ctx context.Context, t *testing.T, url string) manifestAnswer {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", fmt.Sprintf("%s, text/html", strings.Join(oci.ManifestTypes(), ", ")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return manifestAnswer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"),
		nosniff: resp.Header.Get("X-Content-Type-Options"), body: body}
}
