package runtimes

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/containerd"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

// TestCRIPullThroughAgent is the kubelet's pull path on a containerd 1.x node: `shoal
// configure containerd` writes the hosts.toml files, containerd's CRI plugin (config version 2)
// reads them from config_path, and `crictl pull` by tag and by digest is served by the agent.
// `shoal doctor` finds nothing wrong with the node, and `--remove` takes the files away.
func TestCRIPullThroughAgent(t *testing.T) {
	testutil.RequireProgram(t, "crictl")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	origin := origins.StartDockerRegistry(t)
	byTag := pushImage(ctx, t, origin, "test/bytag")
	byDigest := pushImage(ctx, t, origin, "test/bydigest")
	agent := testutil.StartAgent(t, shoal.Path(t), []string{origin.URL})
	certs := configureContainerd(ctx, t, agent, "--registry", origin.URL)
	cri := containerd.StartCRI(t, containerd.CRIOptions{Version: 2, ConfigPath: certs})

	out, err := shoalCmd(ctx, t, "doctor", "--containerd-config", cri.Config, "--agent", agent.URL, "--registry", origin.URL)
	if err != nil {
		t.Errorf("shoal doctor on a configured node: %v", err)
	}
	t.Logf("shoal doctor:\n%s", out)

	pullAndCheck(ctx, t, cri, agent, origin.Addr+"/"+byTag.repo+":v1", byTag)
	pullAndCheck(ctx, t, cri, agent, origin.Addr+"/"+byDigest.repo+"@"+byDigest.content.Manifest, byDigest)

	out, err = shoalCmd(ctx, t, "configure", "containerd", "--config-path", certs, "--remove")
	if err != nil {
		t.Fatalf("--remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(certs, origin.Addr)); !os.IsNotExist(err) {
		t.Errorf("--remove left the registry's directory: %v\n%s", err, out)
	}
}

// TestCRIPullThroughAlias pulls a docker.io name through an agent that serves docker.io from a
// local registry (a pull-through cache such as Harbor's, for a node that must not reach Docker
// Hub). containerd's fallback, registry-1.docker.io, is unreachable here: only the agent can
// serve the pull.
func TestCRIPullThroughAlias(t *testing.T) {
	testutil.RequireProgram(t, "crictl")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	origin := origins.StartDockerRegistry(t)
	requireAliases(t, origin.URL)
	img := pushImage(ctx, t, origin, "library/app")
	alias := "docker.io=" + origin.URL
	agent := testutil.StartAgent(t, shoal.Path(t), []string{alias})
	certs := configureContainerd(ctx, t, agent, "--registry", alias)
	if b, err := os.ReadFile(filepath.Join(certs, "docker.io", "hosts.toml")); err != nil || !strings.Contains(string(b), `server = "https://registry-1.docker.io"`) {
		t.Fatalf("docker.io/hosts.toml: %v\n%s", err, b)
	}
	cri := containerd.StartCRI(t, containerd.CRIOptions{Version: 2, ConfigPath: certs})
	pullAndCheck(ctx, t, cri, agent, "docker.io/library/app:v1", img)
}

// containerd2 returns the containerd 2.x binary, skipping (or failing under CI) without it.
func containerd2(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(Containerd2Env)
	if bin == "" {
		if testutil.InCI() {
			t.Fatalf("%s is not set: .ci/run installs containerd 2.x and sets it", Containerd2Env)
		}
		t.Skipf("%s not set: point it at a containerd 2.x binary (see .ci/run)", Containerd2Env)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v", Containerd2Env, err)
	}
	return bin
}

// TestContainerd2 runs containerd 2.x (config version 3, pulls through its transfer service,
// the default). With config_path set to the directory `shoal configure containerd` wrote, crictl
// pulls by tag and digest through the agent. With the colon-separated config_path containerd
// 2.x defaults to, `shoal doctor` reports the problem, and containerd indeed pulls from the
// origin without asking the agent (containerd issue 12415): the warning is about real behaviour.
func TestContainerd2(t *testing.T) {
	bin := containerd2(t)
	testutil.RequireProgram(t, "crictl")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	origin := origins.StartDockerRegistry(t)

	t.Run("default mode", func(t *testing.T) {
		byTag := pushImage(ctx, t, origin, "test/v2tag")
		byDigest := pushImage(ctx, t, origin, "test/v2digest")
		agent := testutil.StartAgent(t, shoal.Path(t), []string{origin.URL})
		certs := configureContainerd(ctx, t, agent, "--registry", origin.URL)
		cri := containerd.StartCRI(t, containerd.CRIOptions{Binary: bin, Version: 3, ConfigPath: certs})
		out, err := shoalCmd(ctx, t, "doctor", "--containerd-config", cri.Config, "--agent", agent.URL, "--registry", origin.URL)
		if err != nil {
			t.Errorf("shoal doctor on a configured containerd 2.x node: %v", err)
		}
		t.Logf("shoal doctor:\n%s", out)
		pullAndCheck(ctx, t, cri, agent, origin.Addr+"/"+byTag.repo+":v1", byTag)
		pullAndCheck(ctx, t, cri, agent, origin.Addr+"/"+byDigest.repo+"@"+byDigest.content.Manifest, byDigest)
		requireTransferService(t, cri)
	})

	t.Run("colon-separated config_path", func(t *testing.T) {
		img := pushImage(ctx, t, origin, "test/v2colon")
		agent := testutil.StartAgent(t, shoal.Path(t), []string{origin.URL})
		certs := configureContainerd(ctx, t, agent, "--registry", origin.URL)
		cri := containerd.StartCRI(t, containerd.CRIOptions{Binary: bin, Version: 3, ConfigPath: certs + ":" + filepath.Join(t.TempDir(), "docker-certs.d")})
		out, err := shoalCmd(ctx, t, "doctor", "--containerd-config", cri.Config, "--agent", agent.URL, "--registry", origin.URL)
		if err == nil {
			t.Errorf("shoal doctor passed a colon-separated config_path under containerd 2.x:\n%s", out)
		}
		if !strings.Contains(out, "PROBLEM config_path") || !strings.Contains(out, "12415") || !strings.Contains(out, "config_path = \""+certs+"\"") {
			t.Errorf("doctor does not explain the colon-separated config_path and its fix:\n%s", out)
		}
		ref := origin.Addr + "/" + img.repo + ":v1"
		if out, err := cri.Crictl(ctx, "pull", ref); err != nil {
			t.Fatalf("crictl pull %s: %v\n%s", ref, err, out)
		}
		requireTransferService(t, cri)
		if missing, _, err := agent.Committed(img.digests()...); err != nil || len(missing) != len(img.digests()) {
			t.Errorf("the agent holds %d of %d digests: containerd 2.x read the colon-separated config_path after all; doctor's warning is out of date (%v)",
				len(img.digests())-len(missing), len(img.digests()), err)
		}
	})
}

// requireTransferService fails unless containerd pulled in its default mode, through the
// transfer service: it logs when a CRI setting makes it fall back to the local pull.
func requireTransferService(t *testing.T, cri *containerd.CRI) {
	t.Helper()
	if strings.Contains(cri.Proc.Output(), "Falling back to local image pull") {
		t.Errorf("containerd fell back to the local image pull; the test means its default mode, the transfer service:\n%s",
			lastLines(cri.Proc.Output(), 20))
	}
}
