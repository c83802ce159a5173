package realclient

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/containerd"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

// privateOrigin is docker-registry with htpasswd auth (so every repository is private) holding
// test/private:v1, readable by alice.
func privateOrigin(t *testing.T) (*origins.AuthRegistry, testutil.Content) {
	return privateOriginWith(t, origins.StartAuthDockerRegistry)
}

// privateOriginWith is privateOrigin with the auth start chooses (htpasswd, or token auth).
func privateOriginWith(t *testing.T, start func(testing.TB, map[string]string) *origins.AuthRegistry) (*origins.AuthRegistry, testutil.Content) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := start(t, map[string]string{"alice": "alice-secret"})
	img := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), layers, layerSize)
	o.Push(ctx, t, "alice", "test/private:v1", img)
	return o, testutil.ImageContent(t, img)
}

// requireNothingServed checks that the agent answered no manifest or blob GET with 200.
func requireNothingServed(ctx context.Context, t *testing.T, a *testutil.Agent) {
	t.Helper()
	samples, err := a.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range []string{"manifest", "blob"} {
		if n, _ := testutil.ServedOK(samples, ep); n > 0 {
			t.Errorf("the agent served %v %s GETs of a private image to a client without credentials", n, ep)
		}
	}
}

// containerd pulls a private image through an agent mirror: without credentials it is refused
// (the agent holds credentials of its own, and the image, but does not lend them), with `--user`
// it is served by the agent, which relays the origin's challenge so that ctr answers it. An agent
// without credentials of its own serves a client that has them, using the client's at the origin.
// Behind token auth (Docker Hub's, GHCR's and Harbor's kind), ctr trades its credential for a
// token at the origin's realm, and the agent checks the token.
func TestContainerdPrivateImage(t *testing.T) {
	testutil.RequireProgram(t, "containerd")
	testutil.RequireProgram(t, "ctr")
	bin := shoal.Path(t)
	for _, tt := range []struct {
		name      string
		start     func(testing.TB, map[string]string) *origins.AuthRegistry
		nodeCreds bool
	}{
		{"agent with credentials of its own", origins.StartAuthDockerRegistry, true},
		{"agent without credentials", origins.StartAuthDockerRegistry, false},
		{"token auth, agent without credentials", origins.StartTokenDockerRegistry, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, img := privateOriginWith(t, tt.start)
			ref := o.Addr + "/test/private:v1"
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var args []string
			if tt.nodeCreds {
				args = []string{"--docker-config", o.DockerConfig(t, "alice")}
			}
			agent := testutil.StartAgent(t, bin, []string{o.URL}, append(args, "--p2p=false")...)
			hostsDir := writeHostsDir(t, o.DockerRegistry, agent)
			ctd := containerd.Start(t)
			pull := []string{"-n", "shoaltest", "image", "pull", "--hosts-dir", hostsDir, "--snapshotter", "native"}

			if out, err := ctd.Ctr(ctx, append(pull, ref)...); err == nil {
				t.Fatalf("ctr pulled a private image without credentials: %s", lastLine(out))
			}
			requireNothingServed(ctx, t, agent)

			out, err := ctd.Ctr(ctx, append(pull, "--user", "alice:"+o.Users["alice"], ref)...)
			if err != nil {
				t.Fatalf("ctr pull with credentials through the agent: %v\n%s", err, out)
			}
			t.Logf("ctr pull: %s", lastLine(out))
			got, err := ctrImageDigest(ctx, ctd, ref)
			if err != nil {
				t.Fatal(err)
			}
			if got != img.Manifest {
				t.Errorf("ctr recorded %s, want %s", got, img.Manifest)
			}
			agent.RequireServed(ctx, t, 1, blobCount(img), all(img)...)
		})
	}
}

// skopeo copies a private image through an agent mirror: refused without credentials, served by
// the agent with credentials for the mirror in its auth file (containers/image never sends the
// primary registry's --src-creds to a mirror; a mirror's credentials are looked up by its host).
func TestSkopeoPrivateImage(t *testing.T) {
	skopeo := testutil.RequireProgram(t, "skopeo")
	o, img := privateOrigin(t)
	bin := shoal.Path(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	agent := testutil.StartAgent(t, bin, []string{o.URL}, "--docker-config", o.DockerConfig(t, "alice"), "--p2p=false")
	conf := writeRegistriesConf(t, o.DockerRegistry, agent)
	env := []string{"XDG_RUNTIME_DIR=" + t.TempDir(), "HOME=" + t.TempDir()}
	copyArgs := func(dest string, creds ...string) []string {
		args := []string{"--registries-conf", conf, "--insecure-policy", "--tmpdir", t.TempDir(), "copy", "--retry-times", "0"}
		args = append(args, creds...)
		return append(args, "docker://"+o.Addr+"/test/private:v1", "oci:"+dest+":v1")
	}

	if out, err := testutil.RunEnv(ctx, env, skopeo, copyArgs(filepath.Join(t.TempDir(), "image"))...); err == nil {
		t.Fatalf("skopeo copied a private image without credentials: %s", lastLine(out))
	}
	requireNothingServed(ctx, t, agent)

	dest := filepath.Join(t.TempDir(), "image")
	authFile := filepath.Join(t.TempDir(), "auth.json")
	auth := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, agent.Addr, base64.StdEncoding.EncodeToString([]byte("alice:"+o.Users["alice"])))
	if err := os.WriteFile(authFile, []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := testutil.RunEnv(ctx, env, skopeo, copyArgs(dest, "--src-authfile", authFile)...)
	if err != nil {
		t.Fatalf("skopeo copy with credentials through the agent: %v", err)
	}
	t.Logf("skopeo copy: %s", lastLine(out))
	got, err := ociLayoutDigest(dest, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if got != img.Manifest {
		t.Errorf("skopeo wrote %s, want %s", got, img.Manifest)
	}
	agent.RequireServed(ctx, t, 1, blobCount(img), all(img)...)
}
