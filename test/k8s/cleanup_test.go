package k8s

import (
	"bytes"
	"context"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const (
	hookAnnotation   = "helm.sh/hook"
	weightAnnotation = "helm.sh/hook-weight"
	deleteAnnotation = "helm.sh/hook-delete-policy"
)

// cleanupHook is the post-delete hook's three objects, or nils when the values turn it off.
type cleanupHook struct {
	svc *corev1.Service
	ds  *appsv1.DaemonSet
	job *batchv1.Job
}

func findCleanupHook(t *testing.T, objs objects) cleanupHook {
	t.Helper()
	var h cleanupHook
	if o, ok := objs.get("Service", release+"-cleanup"); ok {
		h.svc = o.(*corev1.Service)
	}
	if o, ok := objs.get("DaemonSet", release+"-cleanup"); ok {
		h.ds = o.(*appsv1.DaemonSet)
	}
	if o, ok := objs.get("Job", release+"-cleanup-wait"); ok {
		h.job = o.(*batchv1.Job)
	}
	if (h.svc == nil) != (h.ds == nil) || (h.ds == nil) != (h.job == nil) {
		t.Fatalf("the cleanup hook is rendered in part: Service %v, DaemonSet %v, Job %v", h.svc != nil, h.ds != nil, h.job != nil)
	}
	return h
}

// freePort is a port on 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// checkCleanupHook holds the post-delete hook to docs/kubernetes.md: rendered exactly when the
// init container writes containerd's files; hooks in the right order and removed after success;
// the agent's nodes, the agent's host directory, no capability; the Service names exactly the
// cleanup pods. Then it runs the hook as Helm and the kubelet would, on one pretend node whose
// files the agent's init container wrote: the cleanup pod's command in the background, the Job's
// command against it, and the files must be gone when the Job's command succeeds.
func checkCleanupHook(t *testing.T, objs objects, external map[string]map[string]string, disabled bool) {
	agentDS := agentDaemonSet(t, objs)
	agentPod := agentDS.Spec.Template.Spec
	h := findCleanupHook(t, objs)
	writesFiles := len(agentPod.InitContainers) > 0
	if want := writesFiles && !disabled; (h.ds != nil) != want {
		t.Fatalf("cleanup hook rendered: %v, want %v (the init container writes containerd's files: %v; cleanup.enabled: %v)",
			h.ds != nil, want, writesFiles, !disabled)
	}
	if h.ds == nil {
		return
	}

	for _, m := range []struct {
		kind string
		meta map[string]string
	}{{"Service", h.svc.Annotations}, {"DaemonSet", h.ds.Annotations}, {"Job", h.job.Annotations}} {
		if m.meta[hookAnnotation] != "post-delete" {
			t.Errorf("cleanup %s: hook %q, want post-delete", m.kind, m.meta[hookAnnotation])
		}
		policies := strings.Split(strings.ReplaceAll(m.meta[deleteAnnotation], " ", ""), ",")
		if !slices.Contains(policies, "hook-succeeded") || !slices.Contains(policies, "before-hook-creation") {
			t.Errorf("cleanup %s: delete policy %q: want it removed after success and before a re-run", m.kind, m.meta[deleteAnnotation])
		}
	}
	weight := func(a map[string]string) int {
		w, err := strconv.Atoi(a[weightAnnotation])
		if err != nil {
			t.Errorf("hook weight %q: %v", a[weightAnnotation], err)
		}
		return w
	}
	if j := weight(h.job.Annotations); j <= weight(h.ds.Annotations) || j <= weight(h.svc.Annotations) {
		t.Errorf("the Job's hook weight %d is not after the DaemonSet's and the Service's: Helm would wait for it first", j)
	}

	// The agent's nodes and the agent's host directory.
	pod := h.ds.Spec.Template.Spec
	if !reflect.DeepEqual(pod.Tolerations, agentPod.Tolerations) || !reflect.DeepEqual(pod.NodeSelector, agentPod.NodeSelector) ||
		!reflect.DeepEqual(pod.Affinity, agentPod.Affinity) || pod.PriorityClassName != agentPod.PriorityClassName {
		t.Errorf("cleanup pods are not scheduled as the agents are: tolerations %v nodeSelector %v priority %q",
			pod.Tolerations, pod.NodeSelector, pod.PriorityClassName)
	}
	hostPath := func(p corev1.PodSpec) string {
		for _, v := range p.Volumes {
			if v.Name == "containerd-config" && v.HostPath != nil {
				return v.HostPath.Path
			}
		}
		return ""
	}
	if hp := hostPath(pod); hp == "" || hp != hostPath(agentPod) {
		t.Errorf("cleanup pods mount host path %q, the agents %q", hp, hostPath(agentPod))
	}
	if pod.HostNetwork || pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("cleanup pods: hostNetwork %v, service account token %v: want the pod network and no API access", pod.HostNetwork, pod.AutomountServiceAccountToken)
	}
	jobPod := h.job.Spec.Template.Spec
	if jobPod.AutomountServiceAccountToken == nil || *jobPod.AutomountServiceAccountToken || jobPod.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("wait Job: token %v restartPolicy %q: want no API access, never restarted", jobPod.AutomountServiceAccountToken, jobPod.RestartPolicy)
	}
	for _, c := range append(slices.Clone(pod.Containers), jobPod.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("container %s: security context %+v: want a read-only root, no escalation, every capability dropped", c.Name, sc)
		}
		if c.Image != agentPod.Containers[0].Image {
			t.Errorf("container %s runs %s, the agent %s", c.Name, c.Image, agentPod.Containers[0].Image)
		}
	}

	// The Service selects the cleanup pods and nothing else; no other Service selects them.
	podLabels := labels.Set(h.ds.Spec.Template.Labels)
	for name, o := range objs["Service"] {
		svc := o.Obj.(*corev1.Service)
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		if svc == h.svc {
			if !sel.Matches(podLabels) || sel.Matches(labels.Set(agentDS.Spec.Template.Labels)) {
				t.Errorf("Service %s must select the cleanup pods and not the agents", name)
			}
			if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
				t.Errorf("Service %s: clusterIP %q publishNotReadyAddresses %v: the waiter must see every pod, done or not",
					name, svc.Spec.ClusterIP, svc.Spec.PublishNotReadyAddresses)
			}
			continue
		}
		if len(svc.Spec.Selector) > 0 && sel.Matches(podLabels) {
			t.Errorf("Service %s selects the cleanup pods", name)
		}
	}

	// The ports: the pod listens on its pod IP at the port the Service names and the Job asks.
	cleanupC := &pod.Containers[0]
	waitC := &jobPod.Containers[0]
	if len(cleanupC.Args) == 0 || cleanupC.Args[0] != "cleanup" || len(waitC.Args) == 0 || waitC.Args[0] != "cleanup-wait" {
		t.Fatalf("cleanup pod runs %v, the Job %v", cleanupC.Args, waitC.Args)
	}
	if len(cleanupC.Ports) != 1 || len(h.svc.Spec.Ports) != 1 || h.svc.Spec.Ports[0].TargetPort.StrVal != cleanupC.Ports[0].Name {
		t.Fatalf("Service ports %v do not target the cleanup container's port %v", h.svc.Spec.Ports, cleanupC.Ports)
	}
	port := strconv.Itoa(int(cleanupC.Ports[0].ContainerPort))
	if listen, _ := argValue(cleanupC.Args, "--listen"); listen != "$(POD_IP):"+port {
		t.Errorf("cleanup --listen %q, want $(POD_IP):%s", listen, port)
	}
	if rp := cleanupC.ReadinessProbe; rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/healthz" || rp.HTTPGet.Port.StrVal != cleanupC.Ports[0].Name {
		t.Errorf("cleanup readiness probe %+v: want GET /healthz on its port", rp)
	}
	endpoint, _ := argValue(waitC.Args, "--endpoint")
	wantEndpoint := h.svc.Name + "." + namespace + ".svc.cluster.local:" + strconv.Itoa(int(h.svc.Spec.Ports[0].Port))
	if endpoint != wantEndpoint || h.svc.Spec.Ports[0].Port != cleanupC.Ports[0].ContainerPort {
		t.Errorf("wait --endpoint %q, want %q (the Service's port equal to the pods')", endpoint, wantEndpoint)
	}
	timeoutArg, _ := argValue(waitC.Args, "--timeout")
	timeout, err := time.ParseDuration(timeoutArg)
	if err != nil || h.job.Spec.ActiveDeadlineSeconds == nil || time.Duration(*h.job.Spec.ActiveDeadlineSeconds)*time.Second <= timeout {
		t.Errorf("wait --timeout %q (%v), Job activeDeadlineSeconds %v: the Job's deadline must come after the command's own",
			timeoutArg, err, h.job.Spec.ActiveDeadlineSeconds)
	}
	if timeout+time.Minute > 5*time.Minute {
		t.Errorf("wait --timeout %s: with the image's start it passes helm uninstall's default --timeout of 5m", timeout)
	}

	// Run it. The agent's init container writes the node's files; the agent's preStop does not run
	// (the node was NotReady, or restoreOnStop is off): the hook alone must restore them.
	root := t.TempDir()
	agentNode := &node{t: t, root: root, objs: objs, external: external, pod: &agentPod}
	init := &agentPod.InitContainers[0]
	if out, err := agentNode.run(init, init.Args); err != nil {
		t.Fatalf("init container: %v\n%s", err, out)
	}
	agentNode.checkMirrorFiles("init container", init.Args)
	if len(agentNode.written) == 0 {
		t.Fatal("the init container wrote no files to clean up")
	}
	testPort := freePort(t)
	cleanupArgs := slices.Clone(cleanupC.Args)
	for i, a := range cleanupArgs {
		if strings.HasPrefix(a, "--listen=") {
			cleanupArgs[i] = strings.TrimSuffix(a, ":"+port) + ":" + testPort // POD_IP is 127.0.0.1 here
		}
	}
	cleanupNode := &node{t: t, root: root, objs: objs, external: external, pod: &pod}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, err := cleanupNode.command(ctx, cleanupC, cleanupArgs)
	if err != nil {
		t.Fatal(err)
	}
	var cleanupOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &cleanupOut, &cleanupOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM) // as the kubelet stops it
		return <-exited
	}
	t.Cleanup(func() { _ = stop() })

	waitNode := &node{t: t, root: t.TempDir(), objs: objs, external: external, pod: &jobPod}
	waitArgs := slices.Clone(waitC.Args)
	for i, a := range waitArgs {
		if strings.HasPrefix(a, "--endpoint=") {
			waitArgs[i] = "--endpoint=127.0.0.1:" + testPort // the Service's name resolves to the one pod here
		}
	}
	waitArgs = append(waitArgs, "--interval=100ms")
	out, err := waitNode.run(waitC, waitArgs)
	if err != nil {
		t.Fatalf("the Job's cleanup-wait: %v\n%s\ncleanup pod:\n%s", err, out, cleanupOut.String())
	}
	for _, f := range agentNode.written {
		if b, err := os.ReadFile(f); err == nil {
			t.Errorf("the cleanup hook left %s behind:\n%s", f, b)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("cleanup pod stopped with %v:\n%s", err, cleanupOut.String())
	}
}

// With no cleanup pod answering (every node's pod crashed, or a NetworkPolicy blocks the port),
// the Job's command fails by itself, with the reason, before its deadline.
func TestCleanupWaitUnreachable(t *testing.T) {
	out, err := render(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := findCleanupHook(t, decode(t, out))
	if h.job == nil {
		t.Fatal("no cleanup hook with the default values")
	}
	jobPod := h.job.Spec.Template.Spec
	waitC := &jobPod.Containers[0]
	args := slices.Clone(waitC.Args)
	for i, a := range args {
		if strings.HasPrefix(a, "--endpoint=") {
			args[i] = "--endpoint=127.0.0.1:" + freePort(t)
		}
	}
	args = append(args, "--interval=100ms", "--timeout=1s") // the last --timeout wins
	n := &node{t: t, root: t.TempDir(), objs: objects{}, pod: &jobPod}
	out, err = n.run(waitC, args)
	if err == nil || !strings.Contains(out, "cleanup not confirmed on every node") || !strings.Contains(out, "connection refused") {
		t.Errorf("cleanup-wait with nothing listening: %v\n%s", err, out)
	}
}
