// Package httpguard holds the rules that keep web pages away from a node's admin API and push
// API: a Host allowlist against DNS rebinding, the marks a browser puts on a request a page sends,
// and the content types a page can send without asking the server first. Shoal serves no web
// page, so no request of a page is ever legitimate there; registry clients (crane, skopeo, oras,
// containerd, shoal) send none of these marks.
package httpguard

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"strings"
)

// Hosts is a Host allowlist. A DNS rebinding attack makes a browser send a page's requests to
// the node under a name the attacker controls, so the node sees that name in Host; addresses
// cannot be rebound. So every IP address is allowed, and of names only localhost, the name the
// node listens on, and the names the operator lists.
type Hosts struct {
	names map[string]bool
	// suffixes are the allowed domains given as *.domain, each with its leading dot: a name
	// under one is allowed, the domain itself is not.
	suffixes []string
}

// NewHosts returns the allowlist of a node listening on listen (host:port) with the extra names
// the operator allows (--allowed-host): a name, or *.domain for every name under domain (a
// StatefulSet's pods under their Service, say). One that is neither is an error.
func NewHosts(listen string, extra []string) (*Hosts, error) {
	h := &Hosts{names: map[string]bool{"localhost": true}}
	if host, _, err := net.SplitHostPort(listen); err == nil && host != "" && net.ParseIP(host) == nil {
		h.names[canonical(host)] = true
	}
	for _, n := range extra {
		if n = strings.TrimSpace(n); n == "" {
			continue // SHOAL_ALLOWED_HOST set but empty
		}
		if !ValidName(n) {
			return nil, fmt.Errorf("%q: want a host name such as seed-1.example.com or *.seeds.example.com, without port or scheme", n)
		}
		if domain, ok := strings.CutPrefix(n, "*."); ok {
			h.suffixes = append(h.suffixes, "."+canonical(domain))
			continue
		}
		h.names[canonical(n)] = true
	}
	return h, nil
}

// ValidName reports whether s is a DNS host name (letters, digits, hyphens and dots), *. and a
// host name, or an IP address: what --allowed-host takes.
func ValidName(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	if domain, ok := strings.CutPrefix(s, "*."); ok {
		return !strings.HasPrefix(domain, "*") && net.ParseIP(domain) == nil && ValidName(domain)
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func canonical(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

// Allowed reports whether a request's Host (host or host:port; the port is not checked) is on
// the list. An empty Host (HTTP/1.0) is not.
func (h *Hosts) Allowed(hostHeader string) bool {
	host := hostHeader
	if hh, _, err := net.SplitHostPort(hostHeader); err == nil {
		host = hh
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return false
	}
	if net.ParseIP(host) != nil {
		return true
	}
	host = canonical(host)
	if h.names[host] {
		return true
	}
	for _, suffix := range h.suffixes {
		if strings.HasSuffix(host, suffix) {
			return true
		}
	}
	return false
}

// FromPage reports whether a browser marked r as sent by a web page: it carries an Origin header
// (browsers send it with every POST a page makes, same-origin or not, and with every cross-origin
// request), or Sec-Fetch-Site with any value but "none" (a navigation the user typed). why says
// which.
func FromPage(r *http.Request) (bool, string) {
	if o, ok := r.Header["Origin"]; ok {
		return true, fmt.Sprintf("Origin %q", strings.Join(o, ","))
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "none" {
		return true, "Sec-Fetch-Site " + s
	}
	return false, ""
}

// SimpleContentType reports whether r's Content-Type is one an HTML form can send, and so one a
// page can send to another origin without a CORS preflight: text/plain,
// application/x-www-form-urlencoded or multipart/form-data. No registry client sends them.
func SimpleContentType(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		// Browsers check the type as parsed; a header Go cannot parse is refused anyway.
		mt = strings.ToLower(strings.TrimSpace(strings.Split(ct, ";")[0]))
	}
	switch mt {
	case "text/plain", "application/x-www-form-urlencoded", "multipart/form-data":
		return true
	}
	return false
}
