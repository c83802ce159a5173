package origins

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StartTokenDockerRegistry starts Debian's docker-registry with token auth, as Docker Hub, GHCR
// and Harbor run it: every request needs a bearer token from a token server (run here, in
// process, on the registry's address), which grants each of users, authenticated with Basic
// credentials, the actions it asks for on any repository, and an anonymous client nothing. The
// registry verifies the tokens (ES256, signed by a key whose certificate it trusts). Auth and
// DockerConfig give a user's Basic credential, which clients trade for a token at the realm the
// registry's challenge names.
func StartTokenDockerRegistry(t testing.TB, users map[string]string) *AuthRegistry {
	t.Helper()
	const service, issuer = "shoal-test-registry", "shoal-test-token-server"
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: issuer},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bundle := filepath.Join(dir, "token-ca.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}

	// The token server answers on the registry's own address, as Harbor's does: clients (ggcr's
	// among them) refuse a realm on another private address. A front end sends /token there and
	// everything else to docker-registry, listening behind it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	realm := "http://" + ln.Addr().String() + "/token"
	var registry http.Handler // set once docker-registry is up
	tokens := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// GET with Basic credentials (docker's token flow), or POST of an OAuth2 password grant
		// (containerd's first try when it holds credentials).
		user, pass, basic := r.BasicAuth()
		scopes := r.URL.Query()["scope"]
		if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil {
				http.Error(w, "bad form", http.StatusBadRequest)
				return
			}
			if r.PostForm.Get("grant_type") == "password" {
				user, pass, basic = r.PostForm.Get("username"), r.PostForm.Get("password"), true
			}
			scopes = strings.Fields(r.PostForm.Get("scope"))
		}
		if basic && (users[user] == "" || users[user] != pass) {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		var access []map[string]any
		if basic {
			for _, scope := range scopes {
				// repository:<name>:<actions>, the name possibly holding colons (a port).
				typ, rest, ok := strings.Cut(scope, ":")
				i := strings.LastIndexByte(rest, ':')
				if !ok || i < 0 || typ != "repository" {
					continue
				}
				access = append(access, map[string]any{"type": typ, "name": rest[:i], "actions": strings.Split(rest[i+1:], ",")})
			}
		}
		tok, err := signToken(key, der, issuer, service, user, access)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300,
			"issued_at": time.Now().UTC().Format(time.RFC3339)})
	})
	front := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			tokens.ServeHTTP(w, r)
			return
		}
		registry.ServeHTTP(w, r)
	})}

	reg := startAuthDockerRegistry(t, users, realm, func(string) string {
		return "  token:\n    realm: " + realm + "\n    service: " + service + "\n    issuer: " + issuer +
			"\n    rootcertbundle: " + bundle + "\n"
	})
	behind, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	registry = httputil.NewSingleHostReverseProxy(behind) // keeps the client's Host for upload locations
	go func() { _ = front.Serve(ln) }()
	t.Cleanup(func() { _ = front.Close() })
	reg.Addr = ln.Addr().String()
	reg.URL = "http://" + reg.Addr
	return reg
}

// signToken makes a registry bearer token: a JWT signed with ES256, carrying the signing
// certificate (x5c) that the registry checks against its root bundle.
func signToken(key *ecdsa.PrivateKey, cert []byte, issuer, service, subject string, access []map[string]any) (string, error) {
	if access == nil {
		access = []map[string]any{}
	}
	header, err := json.Marshal(map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{base64.StdEncoding.EncodeToString(cert)}})
	if err != nil {
		return "", err
	}
	now := time.Now()
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	claims, err := json.Marshal(map[string]any{"iss": issuer, "sub": subject, "aud": service,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(nonce), "access": access})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}
