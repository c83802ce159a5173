package origin

import (
	"context"
	"fmt"
	"os"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/shoal-oci/shoal/internal/reference"
)

// dockerConfig is a keychain backed by one docker config.json at an explicit path.
type dockerConfig struct {
	path string
}

var _ authn.ContextKeychain = (*dockerConfig)(nil)

func (dc *dockerConfig) load() (*configfile.ConfigFile, error) {
	f, err := os.Open(dc.path)
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", dc.path, err)
	}
	return cf, nil
}

// Resolve implements authn.Keychain.
func (dc *dockerConfig) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return dc.ResolveContext(context.Background(), target)
}

// ResolveContext looks target up the way ggcr's default keychain does: first "host/repo", then
// "host", with Docker Hub's hosts under the historical key "https://index.docker.io/v1/".
// It returns authn.Anonymous when nothing matches.
func (dc *dockerConfig) ResolveContext(_ context.Context, target authn.Resource) (authn.Authenticator, error) {
	cf, err := dc.load()
	if err != nil {
		return nil, err
	}
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if reference.IsDockerHub(key) {
			key = authn.DefaultAuthKey
		}
		cfg, err := cf.GetAuthConfig(key)
		if err != nil {
			return nil, err
		}
		cfg.ServerAddress = "" // set by GetAuthConfig even when nothing was found
		if cfg != (types.AuthConfig{}) {
			return authn.FromConfig(authn.AuthConfig{
				Username:      cfg.Username,
				Password:      cfg.Password,
				Auth:          cfg.Auth,
				IdentityToken: cfg.IdentityToken,
				RegistryToken: cfg.RegistryToken,
			}), nil
		}
	}
	return authn.Anonymous, nil
}
