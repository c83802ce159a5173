// Package k8s tests the Helm chart (charts/shoal) and the manifests rendered from it: helm lint,
// helm template over several values files, a strict decode of every object into the Kubernetes
// API's own types, and every rendered container's arguments run through the shoal binary built
// from this checkout, so the chart cannot drift from the program. It is its own Go module so that
// k8s.io stays out of Shoal's go.mod.
package k8s

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/shoal-oci/shoal/test/testutil"
)

const (
	repoRoot  = "../.."
	release   = "shoal"
	namespace = "shoal-system"
)

var chartDir = filepath.Join(repoRoot, "charts", "shoal")

// helm runs helm with args and returns its standard output and error output together.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := testutil.RequireProgram(t, "helm")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return testutil.RunEnv(ctx, []string{"HELM_CACHE_HOME=" + t.TempDir(), "HELM_CONFIG_HOME=" + t.TempDir(), "HELM_DATA_HOME=" + t.TempDir()}, bin, args...)
}

// render is `helm template` of the chart with the given values files and --set pairs.
func render(t *testing.T, valuesFiles []string, sets ...string) (string, error) {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return helm(t, args...)
}

// object is one rendered manifest, decoded into its API type.
type object struct {
	Kind, Name string
	Obj        any // *appsv1.DaemonSet, *corev1.Secret, ... or map[string]any for CRDs' kinds
}

// objects holds a render's manifests by kind and name.
type objects map[string]map[string]object

func (o objects) get(kind, name string) (any, bool) {
	x, ok := o[kind][name]
	return x.Obj, ok
}

// newTyped returns the API type of a kind this chart may render; the Prometheus Operator's kinds
// have no type in k8s.io/api and are decoded as maps (their structure is checked by hand).
func newTyped(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "apps/v1 DaemonSet":
		return &appsv1.DaemonSet{}, nil
	case "batch/v1 Job":
		return &batchv1.Job{}, nil
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor", "monitoring.coreos.com/v1 PrometheusRule":
		return &map[string]any{}, nil
	}
	return nil, fmt.Errorf("unexpected kind %s %s", apiVersion, kind)
}

// decode splits helm's output into documents and decodes each strictly: YAML to JSON refusing
// duplicate keys, then JSON into the API type refusing unknown fields (field names are matched
// case-sensitively, which yaml.UnmarshalStrict alone does not do).
func decode(t *testing.T, out string) objects {
	t.Helper()
	objs := objects{}
	for i, doc := range strings.Split(out, "\n---\n") {
		if len(bytes.TrimSpace(stripComments([]byte(doc)))) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &meta); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		typed, err := newTyped(meta.APIVersion, meta.Kind)
		if err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		strict, err := sigsjson.UnmarshalStrict(js, typed, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
		if err != nil || len(strict) > 0 {
			t.Fatalf("%s %s does not decode strictly: %v %v\n%s", meta.Kind, meta.Metadata.Name, err, strict, doc)
		}
		if meta.Metadata.Namespace != namespace {
			t.Errorf("%s %s: namespace %q, want %q", meta.Kind, meta.Metadata.Name, meta.Metadata.Namespace, namespace)
		}
		if objs[meta.Kind] == nil {
			objs[meta.Kind] = map[string]object{}
		}
		if _, dup := objs[meta.Kind][meta.Metadata.Name]; dup {
			t.Fatalf("%s %s rendered twice", meta.Kind, meta.Metadata.Name)
		}
		objs[meta.Kind][meta.Metadata.Name] = object{Kind: meta.Kind, Name: meta.Metadata.Name, Obj: typed}
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var keep [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' && string(t) != "---" {
			keep = append(keep, line)
		}
	}
	return bytes.Join(keep, []byte("\n"))
}

// TestStrictDecodeCatchesWrongCase guards the decoder itself: a field whose name differs from the
// API's only in case, and an unknown field, are both refused.
func TestStrictDecodeCatchesWrongCase(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  namespace: shoal-system\nspec:\n  clusterIp: None\n",
		"apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  namespace: shoal-system\nspec:\n  publishNotReady: true\n",
	} {
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		strict, err := sigsjson.UnmarshalStrict(js, &corev1.Service{}, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
		if err == nil && len(strict) == 0 {
			t.Errorf("accepted:\n%s", doc)
		}
	}
}
