package k8s

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-oci/shoal/test/testutil"
)

var shoalBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// shoal builds the shoal binary from this checkout once (or takes $SHOAL_TEST_BINARY).
func shoal(t *testing.T) string {
	t.Helper()
	shoalBin.once.Do(func() {
		if p := os.Getenv(testutil.BinaryEnv); p != "" {
			shoalBin.path = p
			return
		}
		if shoalBin.dir, shoalBin.err = os.MkdirTemp("", "shoal-k8s-"); shoalBin.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		shoalBin.path = filepath.Join(shoalBin.dir, "shoal")
		_, shoalBin.err = testutil.RunEnvDir(ctx, repoRoot, nil, "go", "build", "-o", shoalBin.path, "./cmd/shoal")
	})
	if shoalBin.err != nil {
		t.Fatalf("building shoal: %v", shoalBin.err)
	}
	return shoalBin.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shoalBin.dir != "" {
		os.RemoveAll(shoalBin.dir)
	}
	os.Exit(code)
}

// node is a pretend node for one pod: a directory standing in for the container's filesystem
// root, where the pod's volumes are laid out as the kubelet would (Secrets and ConfigMaps as
// files, host paths and emptyDirs as directories), so the program reads the very files the
// manifests give it.
type node struct {
	t        *testing.T
	root     string
	objs     objects
	external map[string]map[string]string // Secrets and ConfigMaps the values name but the chart does not make
	pod      *corev1.PodSpec
	claims   map[string]bool // volumeClaimTemplates
	written  []string        // the hosts.toml files configure wrote
}

// mount lays out c's volumes under the node's root and returns the mount paths, longest first.
func (n *node) mount(c *corev1.Container) []string {
	var paths []string
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(n.root, m.MountPath)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			n.t.Fatal(err)
		}
		paths = append(paths, m.MountPath)
		if n.claims[m.Name] {
			continue
		}
		var vol *corev1.Volume
		for i := range n.pod.Volumes {
			if n.pod.Volumes[i].Name == m.Name {
				vol = &n.pod.Volumes[i]
			}
		}
		switch {
		case vol == nil:
			n.t.Errorf("container %s mounts %q, which is no volume of the pod", c.Name, m.Name)
		case vol.Secret != nil:
			n.files(dir, "Secret", vol.Secret.SecretName, vol.Secret.Items)
		case vol.ConfigMap != nil:
			n.files(dir, "ConfigMap", vol.ConfigMap.Name, vol.ConfigMap.Items)
		case vol.HostPath != nil, vol.EmptyDir != nil:
		default:
			n.t.Errorf("volume %s: a kind this test does not lay out", vol.Name)
		}
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	return paths
}

// data is the content of a Secret or ConfigMap: the rendered one, or one the values name.
func (n *node) data(kind, name string) map[string]string {
	if o, ok := n.objs.get(kind, name); ok {
		out := map[string]string{}
		switch o := o.(type) {
		case *corev1.Secret:
			for k, v := range o.Data {
				out[k] = string(v)
			}
			for k, v := range o.StringData {
				out[k] = v
			}
		case *corev1.ConfigMap:
			for k, v := range o.Data {
				out[k] = v
			}
		}
		return out
	}
	if d, ok := n.external[kind+"/"+name]; ok {
		return d
	}
	n.t.Errorf("%s %s is used but neither rendered nor one the values name", kind, name)
	return nil
}

func (n *node) files(dir, kind, name string, items []corev1.KeyToPath) {
	d := n.data(kind, name)
	if len(items) == 0 {
		for k := range d {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		v, ok := d[it.Key]
		if !ok {
			n.t.Errorf("%s %s has no key %q", kind, name, it.Key)
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, it.Path), []byte(v), 0o600); err != nil {
			n.t.Fatal(err)
		}
	}
}

// env resolves c's environment as the kubelet would; fields of the pod's status get loopback
// addresses, so anything that did listen would stay on this machine.
func (n *node) env(c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		v := expand(e.Value, env)
		if f := e.ValueFrom; f != nil {
			switch {
			case f.ConfigMapKeyRef != nil:
				v = n.data("ConfigMap", f.ConfigMapKeyRef.Name)[f.ConfigMapKeyRef.Key]
			case f.SecretKeyRef != nil:
				v = n.data("Secret", f.SecretKeyRef.Name)[f.SecretKeyRef.Key]
			case f.FieldRef != nil && strings.HasSuffix(f.FieldRef.FieldPath, "IP"):
				v = "127.0.0.1"
			case f.FieldRef != nil:
				v = "shoal-0"
			case f.ResourceFieldRef != nil:
				q, ok := c.Resources.Limits[corev1.ResourceName(strings.TrimPrefix(f.ResourceFieldRef.Resource, "limits."))]
				if !ok {
					n.t.Errorf("container %s: %s from %s, which has no limit", c.Name, e.Name, f.ResourceFieldRef.Resource)
				}
				v = strconv.FormatInt(q.Value(), 10)
			}
		}
		env[e.Name] = v
	}
	return env
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) with the variable's value, leaving unknown references as they are (the
// kubelet's rule).
func expand(s string, env map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// rebase points a path argument (VALUE or --flag=VALUE) that lies under a mount at the node's copy.
func (n *node) rebase(arg string, mounts []string) string {
	prefix, value := "", arg
	if i := strings.Index(arg, "="); strings.HasPrefix(arg, "-") && i > 0 {
		prefix, value = arg[:i+1], arg[i+1:]
	}
	for _, m := range mounts {
		if value == m || strings.HasPrefix(value, m+"/") {
			return prefix + filepath.Join(n.root, value)
		}
	}
	return arg
}

// pathValue is the absolute file path an argument names ("" for none; libp2p multiaddrs are not
// paths).
func pathValue(arg string) string {
	if i := strings.Index(arg, "="); strings.HasPrefix(arg, "-") && i > 0 {
		arg = arg[i+1:]
	}
	for _, m := range []string{"/ip4/", "/ip6/", "/dns", "/tcp/"} {
		if strings.HasPrefix(arg, m) {
			return ""
		}
	}
	if strings.HasPrefix(arg, "/") {
		return arg
	}
	return ""
}

// run runs one command of container c (its args, or an exec hook's command) with the shoal
// binary, on the node's files and with the container's environment only. agent and seed get
// --check-config, so they check everything and start nothing.
func (n *node) run(c *corev1.Container, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, err := n.command(ctx, c, argv)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// command is the process run would start for argv, not yet started.
func (n *node) command(ctx context.Context, c *corev1.Container, argv []string) (*exec.Cmd, error) {
	mounts := n.mount(c)
	env := n.env(c)
	args := make([]string, 0, len(argv)+1)
	for _, a := range argv {
		a = n.rebase(expand(a, env), mounts)
		if p := pathValue(a); p != "" && !strings.HasPrefix(p, n.root+"/") {
			// Never let a chart's mistake touch this machine's own files.
			return nil, fmt.Errorf("%s names a path outside the container's volumes", a)
		}
		args = append(args, a)
	}
	if len(args) > 0 && (args[0] == "agent" || args[0] == "seed") {
		args = append(args, "--check-config")
	}
	cmd := exec.CommandContext(ctx, shoal(n.t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + n.root}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+n.rebase(v, mounts))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd, nil
}

// podSpecs are the pod templates of the rendered workloads, by workload.
func podSpecs(objs objects) map[string]*corev1.PodSpec {
	pods := map[string]*corev1.PodSpec{}
	for name, o := range objs["DaemonSet"] {
		ds := o.Obj.(*appsv1.DaemonSet)
		if ds.Annotations["helm.sh/hook"] != "" {
			continue // hooks run in their own order (checkCleanupHook)
		}
		pods["DaemonSet/"+name] = &ds.Spec.Template.Spec
	}
	for name, o := range objs["StatefulSet"] {
		pods["StatefulSet/"+name] = &o.Obj.(*appsv1.StatefulSet).Spec.Template.Spec
	}
	return pods
}

// runPods runs every command the rendered pods would run, in the kubelet's order: init
// containers, then the containers (as --check-config), then their preStop hooks.
func runPods(t *testing.T, objs objects, external map[string]map[string]string) {
	for workload, pod := range podSpecs(objs) {
		t.Run(workload, func(t *testing.T) {
			claims := map[string]bool{}
			if o, ok := objs.get("StatefulSet", strings.TrimPrefix(workload, "StatefulSet/")); ok {
				for _, c := range o.(*appsv1.StatefulSet).Spec.VolumeClaimTemplates {
					claims[c.Name] = true
				}
			}
			n := &node{t: t, root: t.TempDir(), objs: objs, external: external, pod: pod, claims: claims}
			var steps []struct {
				what string
				c    *corev1.Container
				argv []string
			}
			add := func(what string, c *corev1.Container, argv []string) {
				steps = append(steps, struct {
					what string
					c    *corev1.Container
					argv []string
				}{what, c, argv})
			}
			for i := range pod.InitContainers {
				c := &pod.InitContainers[i]
				add("init container "+c.Name, c, c.Args)
			}
			for i := range pod.Containers {
				c := &pod.Containers[i]
				if len(c.Command) > 0 {
					t.Errorf("container %s overrides the image's entrypoint: %v", c.Name, c.Command)
				}
				add("container "+c.Name, c, c.Args)
			}
			for i := range pod.Containers {
				c := &pod.Containers[i]
				if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Exec != nil {
					cmd := c.Lifecycle.PreStop.Exec.Command
					if len(cmd) == 0 || cmd[0] != "shoal" {
						t.Errorf("container %s preStop %v does not run shoal", c.Name, cmd)
						continue
					}
					add("preStop of "+c.Name, c, cmd[1:])
				}
			}
			for _, s := range steps {
				if len(s.argv) == 0 {
					t.Errorf("%s has no arguments", s.what)
					continue
				}
				if out, err := n.run(s.c, s.argv); err != nil {
					if len(out) > 800 { // the usage text before the reason
						out = "..." + out[len(out)-800:]
					}
					t.Errorf("%s: shoal %s: %v\n%s", s.what, strings.Join(s.argv, " "), err, out)
					continue
				}
				n.checkMirrorFiles(s.what, s.argv)
			}
		})
	}
}

// checkMirrorFiles: after `configure containerd` every registry it was given has a hosts.toml
// naming the agent under the node's config path; after `--remove` none of the files written
// before is left (the node had none of its own), wherever the remove was pointed.
func (n *node) checkMirrorFiles(what string, argv []string) {
	if len(argv) < 2 || argv[0] != "configure" || argv[1] != "containerd" {
		return
	}
	if slices.Contains(argv, "--remove") {
		for _, f := range n.written {
			if b, err := os.ReadFile(f); err == nil {
				n.t.Errorf("%s left %s behind:\n%s", what, f, b)
			}
		}
		return
	}
	configPath, _ := argValue(argv, "--config-path")
	agentURL, _ := argValue(argv, "--agent")
	var hosts []string
	for _, a := range argv {
		if r, ok := strings.CutPrefix(a, "--registry="); ok {
			hosts = append(hosts, registryHost(r))
		}
	}
	if slices.Contains(argv, "--default") {
		hosts = append(hosts, "_default")
	}
	for _, h := range hosts {
		f := filepath.Join(n.root, configPath, h, "hosts.toml")
		n.written = append(n.written, f)
		b, err := os.ReadFile(f)
		switch {
		case err != nil:
			n.t.Errorf("%s wrote no hosts.toml for %s: %v", what, h, err)
		case !strings.Contains(string(b), agentURL):
			n.t.Errorf("%s: %s/hosts.toml does not name the agent %s:\n%s", what, h, agentURL, b)
		}
	}
}

// registryHost is the directory containerd looks in for a registry given in any of the agent's
// forms: a host, a URL, or name=URL (the name); Docker Hub's endpoints are docker.io.
func registryHost(r string) string {
	if name, _, ok := strings.Cut(r, "="); ok {
		r = name
	}
	if _, rest, ok := strings.Cut(r, "://"); ok {
		r, _, _ = strings.Cut(rest, "/")
	}
	switch r {
	case "registry-1.docker.io", "index.docker.io":
		return "docker.io"
	}
	return r
}
