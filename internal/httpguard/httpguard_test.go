package httpguard

import (
	"net/http/httptest"
	"testing"
)

func TestHosts(t *testing.T) {
	h, err := NewHosts("seed-1.internal:5000", []string{"Seed.Example.com", " ", "*.seeds.svc.cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"127.0.0.1:5000", true},
		{"127.0.0.1", true},
		{"[::1]:5000", true},
		{"::1", true},
		{"10.0.0.9:5000", true}, // an address cannot be rebound
		{"localhost:5000", true},
		{"LOCALHOST", true},
		{"seed-1.internal:5000", true}, // the --listen name
		{"seed.example.com", true},
		{"seed.example.com.:443", true},
		{"attacker.example:5000", false},
		{"example.com", false},
		{"sub.seed.example.com", false},
		{"localhost.attacker.example", false},
		{"2130706433", false}, // not an address Go parses: a name, and not on the list
		{"shoal-seed-0.seeds.svc.cluster.local:5000", true},
		{"a.b.seeds.svc.cluster.local", true},
		{"seeds.svc.cluster.local", false}, // *.domain is names under it
		{"evilseeds.svc.cluster.local", false},
		{"", false},
	} {
		if got := h.Allowed(tc.host); got != tc.want {
			t.Errorf("Allowed(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
	for _, bad := range []string{"https://seed.example", "seed.example:5000", "seed example", "-seed.example", "a..b", "*", "*.*.example.com", "x.*.example.com", "*.10.0.0.1"} {
		if _, err := NewHosts("127.0.0.1:5000", []string{bad}); err == nil {
			t.Errorf("NewHosts accepted %q", bad)
		}
	}
}

func TestFromPageAndSimpleContentType(t *testing.T) {
	for _, tc := range []struct {
		name         string
		header       map[string]string
		page, simple bool
	}{
		{"registry client", map[string]string{"Content-Type": "application/json", "User-Agent": "crane"}, false, false},
		{"no headers", nil, false, false},
		{"octet-stream", map[string]string{"Content-Type": "application/octet-stream"}, false, false},
		{"Origin", map[string]string{"Origin": "http://attacker.example"}, true, false},
		{"empty Origin", map[string]string{"Origin": ""}, true, false},
		{"Sec-Fetch-Site cross-site", map[string]string{"Sec-Fetch-Site": "cross-site"}, true, false},
		{"Sec-Fetch-Site same-origin", map[string]string{"Sec-Fetch-Site": "same-origin"}, true, false},
		{"Sec-Fetch-Site none", map[string]string{"Sec-Fetch-Site": "none"}, false, false},
		{"text/plain", map[string]string{"Content-Type": "text/plain;charset=UTF-8"}, false, true},
		{"TEXT/PLAIN", map[string]string{"Content-Type": "TEXT/PLAIN"}, false, true},
		{"form", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, false, true},
		{"multipart", map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, false, true},
		{"malformed text/plain", map[string]string{"Content-Type": "text/plain; ;;"}, false, true},
	} {
		r := httptest.NewRequest("POST", "/v2/a/blobs/uploads/", nil)
		for k, v := range tc.header {
			r.Header[k] = []string{v}
		}
		if page, _ := FromPage(r); page != tc.page {
			t.Errorf("%s: FromPage = %v", tc.name, page)
		}
		if got := SimpleContentType(r); got != tc.simple {
			t.Errorf("%s: SimpleContentType = %v", tc.name, got)
		}
	}
}
