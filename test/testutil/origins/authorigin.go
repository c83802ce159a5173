package origins

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"
)

// AuthRegistry is a running Debian docker-registry with htpasswd auth: every repository is
// private, readable by each of Users with its password.
type AuthRegistry struct {
	*DockerRegistry
	Users map[string]string // user → password
	Realm string
	// Storage is the registry's storage directory.
	Storage string
}

// StartAuthDockerRegistry starts `docker-registry serve` with htpasswd auth (bcrypt hashes from
// golang.org/x/crypto/bcrypt) for users, filesystem storage in a temporary directory, and plain
// HTTP on a free 127.0.0.1 port. It is skipped like StartDockerRegistry.
func StartAuthDockerRegistry(t testing.TB, users map[string]string) *AuthRegistry {
	t.Helper()
	return startAuthDockerRegistry(t, users, "shoal-test", func(dir string) string {
		var htpasswd []byte
		for u, p := range users {
			h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			htpasswd = fmt.Appendf(htpasswd, "%s:%s\n", u, h)
		}
		htpath := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpath, htpasswd, 0o600); err != nil {
			t.Fatal(err)
		}
		return "  htpasswd:\n    realm: shoal-test\n    path: " + htpath + "\n"
	})
}

// startAuthDockerRegistry starts docker-registry with the auth section authConfig writes (given
// a directory for its files); realm names the registry's realm.
func startAuthDockerRegistry(t testing.TB, users map[string]string, realm string, authConfig func(dir string) string) *AuthRegistry {
	t.Helper()
	dir := t.TempDir()
	reg := startDockerRegistry(t, dir, authConfig(dir), http.StatusUnauthorized)
	return &AuthRegistry{DockerRegistry: reg, Users: users, Realm: realm, Storage: filepath.Join(dir, "storage")}
}

// Auth is user's credential as a client sends it: an Authorization header value.
func (r *AuthRegistry) Auth(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+r.Users[user]))
}

// DockerConfig writes a docker config.json with user's credentials for the registry and returns
// its path.
func (r *AuthRegistry) DockerConfig(t testing.TB, user string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"auths": map[string]any{r.Addr: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + r.Users[user]))}}})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Push writes an image or index to repoAndTag ("test/app:v1") on the registry as user.
func (r *AuthRegistry) Push(ctx context.Context, t testing.TB, user, repoAndTag string, content remote.Taggable) {
	t.Helper()
	ref, err := name.ParseReference(r.Addr+"/"+repoAndTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: user, Password: r.Users[user]})
	switch c := content.(type) {
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, c, remote.WithContext(ctx), auth)
	case v1.Image:
		err = remote.Write(ref, c, remote.WithContext(ctx), auth)
	default:
		t.Fatalf("cannot push %T", content)
	}
	if err != nil {
		t.Fatalf("pushing %s: %v", repoAndTag, err)
	}
}
