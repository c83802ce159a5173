package k8s

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/shoal-oci/shoal/p2p/keys"
	"github.com/shoal-oci/shoal/p2p/seedauth"
	"github.com/shoal-oci/shoal/test/testutil"
)

// fixtures are Secrets and ConfigMaps a values file names as existing: real keys made by the
// shoal binary, as docs/kubernetes.md tells an operator to make them.
type fixtures struct {
	external  map[string]map[string]string
	publicKey string
}

func makeFixtures(t *testing.T) fixtures {
	t.Helper()
	bin := shoal(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	swarm, err := testutil.Run(ctx, bin, "swarm-key")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "seed-authority.key")
	pub, err := testutil.Run(ctx, bin, "seed-authority", "create", "--key", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub = strings.TrimSpace(pub)
	return fixtures{publicKey: pub, external: map[string]map[string]string{
		"Secret/shoal-swarm-key":         {"swarm.key": swarm},
		"Secret/shoal-seed-authority":    {"seed-authority.key": string(key)},
		"ConfigMap/shoal-seed-authority": {"seed-authorities": pub},
		"Secret/shoal-admin-token":       {"token": "an admin token\n"},
		"Secret/registry-credentials":    {".dockerconfigjson": `{"auths":{"ghcr.io":{"auth":"dXNlcjpwYXNz"}}}`},
	}}
}

// The values files of testdata/ and what each must render. Every one is linted with --strict,
// rendered, decoded strictly, checked for the chart's promises, and has every command of every
// pod run by the shoal binary.
var valuesCases = []struct {
	file      string
	setPublic bool     // pass the fixtures' seed authority public key with --set
	kinds     []string // kinds the render must hold
	seeds     bool
	noCleanup bool // cleanup.enabled is false
}{
	{file: "default.yaml", kinds: []string{"DaemonSet", "StatefulSet", "Service", "Secret", "ConfigMap", "PodDisruptionBudget", "Job"}, seeds: true},
	{file: "full.yaml", setPublic: true, kinds: []string{"DaemonSet", "StatefulSet", "Service", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ConfigMap"}, seeds: true},
	{file: "no-seeds.yaml", kinds: []string{"DaemonSet", "Service", "Secret", "ConfigMap"}},
	{file: "plain-mirror.yaml", kinds: []string{"DaemonSet", "Service"}},
	{file: "alias.yaml", kinds: []string{"DaemonSet", "StatefulSet"}, seeds: true},
	{file: "air-gapped.yaml", kinds: []string{"DaemonSet", "StatefulSet"}, seeds: true},
	{file: "../../../deploy/values.yaml", kinds: []string{"DaemonSet", "StatefulSet", "Service", "PodDisruptionBudget"}, seeds: true, noCleanup: true},
}

func TestChart(t *testing.T) {
	fx := makeFixtures(t)
	for _, tc := range valuesCases {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			file := filepath.Join("testdata", tc.file)
			var sets []string
			if tc.setPublic {
				sets = append(sets, "seedAuthority.publicKey="+fx.publicKey)
			}
			lint := []string{"lint", "--strict", chartDir, "--namespace", namespace, "--values", file}
			for _, s := range sets {
				lint = append(lint, "--set", s)
			}
			if out, err := helm(t, lint...); err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
			out, err := render(t, []string{file}, sets...)
			if err != nil {
				t.Fatalf("helm template: %v", err)
			}
			objs := decode(t, out)
			for _, k := range tc.kinds {
				if len(objs[k]) == 0 {
					t.Errorf("no %s rendered", k)
				}
			}
			if got := len(objs["StatefulSet"]) > 0; got != tc.seeds {
				t.Errorf("seeds rendered: %v, want %v", got, tc.seeds)
			}
			checkAgent(t, objs)
			checkSeeds(t, objs)
			checkTrust(t, objs)
			checkMonitoring(t, objs)
			runPods(t, objs, fx.external)
			checkCleanupHook(t, objs, fx.external, tc.noCleanup)
		})
	}
}

func agentDaemonSet(t *testing.T, objs objects) *appsv1.DaemonSet {
	t.Helper()
	o, ok := objs.get("DaemonSet", release+"-agent")
	if !ok {
		t.Fatalf("no DaemonSet %s-agent", release)
	}
	return o.(*appsv1.DaemonSet)
}

func argValue(args []string, flag string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
	}
	return "", false
}

// checkAgent holds the agent DaemonSet to what docs/kubernetes.md promises about a node.
func checkAgent(t *testing.T, objs objects) {
	ds := agentDaemonSet(t, objs)
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || pod.PriorityClassName != "system-node-critical" {
		t.Errorf("hostNetwork %v priorityClassName %q", pod.HostNetwork, pod.PriorityClassName)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == ""
	}) {
		t.Errorf("tolerations %v do not tolerate every taint", pod.Tolerations)
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("update strategy %q", ds.Spec.UpdateStrategy.Type)
	}
	agent := pod.Containers[0]
	if v, _ := argValue(agent.Args, "--listen"); !strings.HasPrefix(v, "127.0.0.1:") {
		t.Errorf("agent --listen %q: /v2 must stay on the host's loopback", v)
	}
	if !slices.ContainsFunc(agent.Env, func(e corev1.EnvVar) bool {
		return e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil &&
			e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
	}) {
		t.Error("GOMEMLIMIT does not follow limits.memory")
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("container %s: security context %+v: want a read-only root, no escalation, every capability dropped", c.Name, sc)
		}
	}
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "data" && v.HostPath != nil }) {
		t.Error("no hostPath data volume")
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		if c.Image != agent.Image {
			t.Errorf("container %s runs %s, the agent %s", c.Name, c.Image, agent.Image)
		}
	}
	if b, ok := argValue(agent.Args, "--bootstrap"); ok {
		// On the host network, only this policy resolves the cluster's Service names.
		if pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
			t.Errorf("dnsPolicy %q: the dns: bootstrap name would not resolve", pod.DNSPolicy)
		}
		checkBootstrap(t, objs, b, ds.Spec.Template.Labels)
	} else if !slices.Contains(agent.Args, "--p2p=false") {
		t.Error("agent has peers but no --bootstrap")
	}
	// The host's certs.d is mounted for one reason: the init container that writes the mirror files.
	if slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "containerd-config" }) &&
		!slices.ContainsFunc(pod.InitContainers, func(c corev1.Container) bool {
			return len(c.Args) >= 2 && c.Args[0] == "configure" && c.Args[1] == "containerd"
		}) {
		t.Error("the host's containerd config is mounted but no init container runs `shoal configure containerd`")
	}
}

// checkBootstrap: the dns: name is a headless Service that publishes pods before they are ready
// and selects agents and seeds alike, on the peer port.
func checkBootstrap(t *testing.T, objs objects, bootstrap string, agentLabels map[string]string) {
	rest, ok := strings.CutPrefix(bootstrap, "dns:")
	host, port, _ := strings.Cut(rest, ":")
	name, domain, _ := strings.Cut(host, ".")
	if !ok || domain != namespace+".svc.cluster.local" || port != "4001" {
		t.Errorf("--bootstrap %q: want dns:<service>.%s.svc.cluster.local:4001", bootstrap, namespace)
		return
	}
	o, ok := objs.get("Service", name)
	if !ok {
		t.Errorf("--bootstrap names Service %s, which is not rendered", name)
		return
	}
	svc := o.(*corev1.Service)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: clusterIP %q publishNotReadyAddresses %v", name, svc.Spec.ClusterIP, svc.Spec.PublishNotReadyAddresses)
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	if !sel.Matches(labels.Set(agentLabels)) {
		t.Errorf("Service %s does not select the agents", name)
	}
	if o, ok := objs.get("StatefulSet", release+"-seed"); ok && !sel.Matches(labels.Set(o.(*appsv1.StatefulSet).Spec.Template.Labels)) {
		t.Errorf("Service %s does not select the seeds", name)
	}
}

func checkSeeds(t *testing.T, objs objects) {
	o, ok := objs.get("StatefulSet", release+"-seed")
	if !ok {
		return
	}
	sts := o.(*appsv1.StatefulSet)
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Error("seeds have no volumeClaimTemplates")
	}
	if svc, ok := objs.get("Service", sts.Spec.ServiceName); !ok || svc.(*corev1.Service).Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("the StatefulSet's Service %q is not a rendered headless Service", sts.Spec.ServiceName)
	}
	pod := sts.Spec.Template.Spec
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.FSGroup == nil {
		t.Errorf("seeds: pod security context %+v: want non-root with an fsGroup for the volume", sc)
	}
	if _, ok := argValue(pod.Containers[0].Args, "--admin-token-file"); !ok {
		t.Error("seeds listen on the pod network without --admin-token-file")
	}
	found := false
	for _, p := range objs["PodDisruptionBudget"] {
		pdb := p.Obj.(*policyv1.PodDisruptionBudget)
		sel := labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels)
		found = found || sel.Matches(labels.Set(sts.Spec.Template.Labels))
	}
	if !found {
		t.Error("no PodDisruptionBudget selects the seeds")
	}
}

// checkTrust: agents never get the seed authority's private key or the admin token, and a
// generated seed authority key's public half is the one every node trusts.
func checkTrust(t *testing.T, objs objects) {
	ds := agentDaemonSet(t, objs)
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Secret != nil && (strings.Contains(v.Secret.SecretName, "seed-authority") || strings.Contains(v.Secret.SecretName, "admin-token")) {
			t.Errorf("agents mount Secret %s", v.Secret.SecretName)
		}
	}
	for _, c := range ds.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("agent env %s comes from Secret %s", e.Name, e.ValueFrom.SecretKeyRef.Name)
			}
		}
	}
	sec, ok := objs.get("Secret", release+"-seed-authority")
	if !ok {
		return
	}
	k, err := seedauth.ParseKey(sec.(*corev1.Secret).Data["seed-authority.key"])
	if err != nil {
		t.Fatalf("generated seed authority key: %v", err)
	}
	cm, ok := objs.get("ConfigMap", release+"-seed-authority")
	if !ok {
		t.Fatal("a seed authority key but no ConfigMap of public keys")
	}
	trusted := strings.Split(cm.(*corev1.ConfigMap).Data["seed-authorities"], ",")
	if want := seedauth.FormatPublicKey(k.Public().(ed25519.PublicKey)); trusted[0] != want {
		t.Fatalf("nodes trust %q, but the seeds' key is %q's", trusted[0], want)
	}
}

// Keys the chart makes are new for every install (helm template cannot look up, so each render is
// an install): no key is baked into the chart. Each is in Shoal's own format.
func TestGeneratedKeysAreFresh(t *testing.T) {
	seen := map[string]bool{}
	for range 2 {
		out, err := render(t, nil)
		if err != nil {
			t.Fatal(err)
		}
		objs := decode(t, out)
		for _, name := range []string{"swarm-key", "seed-authority", "admin-token"} {
			o, ok := objs.get("Secret", release+"-"+name)
			if !ok {
				t.Fatalf("no Secret %s-%s", release, name)
			}
			for k, v := range o.(*corev1.Secret).Data {
				if seen[string(v)] {
					t.Errorf("Secret %s key %s is the same in two installs", name, k)
				}
				seen[string(v)] = true
				if k == "swarm.key" {
					if _, err := keys.ParseSwarmKey(v); err != nil {
						t.Error(err)
					}
				}
			}
		}
	}
}

// values.schema.json refuses wrong types, unknown keys and values Shoal would refuse, before
// anything reaches a cluster.
func TestValuesRejected(t *testing.T) {
	if _, err := render(t, nil, "agent.port=5001"); err != nil {
		t.Fatalf("a valid value refused: %v", err)
	}
	for _, tc := range []struct{ name, set, want string }{
		{"unknown top-level key", "agnet.port=5001", "agnet"},
		{"unknown nested key", "agent.replicas=3", "replicas"},
		{"wrong type", "agent.port=http", "port"},
		{"port out of range", "p2p.port=70000", "port"},
		{"log level", "logLevel=loud", "logLevel"},
		{"pull policy", "image.pullPolicy=Sometimes", "pullPolicy"},
		{"colon-separated config path", "runtime.containerd.configPath=/etc/containerd/certs.d:/etc/docker/certs.d", "configPath"},
		{"relative data dir", "agent.dataDir=var/lib/shoal", "dataDir"},
		{"registry without a scheme", "registries[0]=registry-1.docker.io", "registries"},
		{"bad public key", "seedAuthority.publicKey=abc", "publicKey"},
		{"store size", "agent.maxStoreSize=lots", "maxStoreSize"},
		{"existing authority without its public key", "seedAuthority.existingSecret=mine", "seedAuthority.publicKey"},
		{"cleanup port the pod cannot bind", "cleanup.port=80", "port"},
		{"cleanup timeout as a duration", "cleanup.timeoutSeconds=3m", "timeoutSeconds"},
		{"unknown cleanup key", "cleanup.timeout=180", "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := render(t, nil, tc.set)
			if err == nil {
				t.Fatalf("--set %s accepted", tc.set)
			}
			if !strings.Contains(out+err.Error(), tc.want) {
				t.Fatalf("--set %s refused without naming %q: %v", tc.set, tc.want, err)
			}
		})
	}
}

// deploy/shoal.yaml is the chart rendered with deploy/values.yaml, for clusters without Helm; it
// must be what the chart renders today. Regenerate it with the command in docs/kubernetes.md:
//
//	helm template shoal charts/shoal --namespace shoal-system -f deploy/values.yaml > deploy/shoal.yaml
func TestRenderedManifestsUpToDate(t *testing.T) {
	want, err := render(t, []string{filepath.Join(repoRoot, "deploy", "values.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "shoal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("deploy/shoal.yaml is not what the chart renders; regenerate it with\n" +
			"  helm template shoal charts/shoal --namespace shoal-system -f deploy/values.yaml > deploy/shoal.yaml")
	}
}

// deploy/cleanup.yaml is the post-delete hook alone, rendered with deploy/values.yaml, for
// clusters without Helm (docs/kubernetes.md, "Uninstall"). It decodes strictly and must be current:
//
//	helm template shoal charts/shoal --namespace shoal-system -f deploy/values.yaml --set cleanup.enabled=true --show-only templates/cleanup.yaml > deploy/cleanup.yaml
func TestRenderedCleanupUpToDate(t *testing.T) {
	want, err := helm(t, "template", release, chartDir, "--namespace", namespace, "--values", filepath.Join(repoRoot, "deploy", "values.yaml"),
		"--set", "cleanup.enabled=true", "--show-only", "templates/cleanup.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := findCleanupHook(t, decode(t, want))
	if h.ds == nil {
		t.Fatal("deploy/values.yaml with cleanup.enabled=true renders no cleanup hook")
	}
	got, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "cleanup.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("deploy/cleanup.yaml is not what the chart renders; regenerate it with\n" +
			"  helm template shoal charts/shoal --namespace shoal-system -f deploy/values.yaml --set cleanup.enabled=true --show-only templates/cleanup.yaml > deploy/cleanup.yaml")
	}
}

// checkMonitoring: every ServiceMonitor endpoint names a port of a Service it selects, and the
// dashboard is JSON.
func checkMonitoring(t *testing.T, objs objects) {
	for name, o := range objs["ServiceMonitor"] {
		var sm struct {
			Spec struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				Endpoints []struct {
					Port string `json:"port"`
				} `json:"endpoints"`
			} `json:"spec"`
		}
		b, _ := json.Marshal(*o.Obj.(*map[string]any))
		if err := json.Unmarshal(b, &sm); err != nil {
			t.Fatal(err)
		}
		for _, ep := range sm.Spec.Endpoints {
			found := false
			for _, so := range objs["Service"] {
				svc := so.Obj.(*corev1.Service)
				if !labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(svc.Labels)) {
					continue
				}
				found = found || slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port })
			}
			if !found {
				t.Errorf("ServiceMonitor %s: no selected Service has a port %q", name, ep.Port)
			}
		}
	}
	if o, ok := objs.get("ConfigMap", release+"-dashboard"); ok {
		for k, v := range o.(*corev1.ConfigMap).Data {
			if !json.Valid([]byte(v)) {
				t.Errorf("dashboard %s is not JSON", k)
			}
		}
	}
}
