package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

var kubeDir = filepath.Join(repoRoot, "deploy", "kubernetes")

// kustomization is what kustomization.yaml may hold. It is decoded
// strictly, so a field the test does not know of fails it rather than
// going unchecked.
type kustomization struct {
	APIVersion         string      `json:"apiVersion"`
	Kind               string      `json:"kind"`
	Resources          []string    `json:"resources"`
	Images             []kustImage `json:"images"`
	ConfigMapGenerator []generator `json:"configMapGenerator"`
	SecretGenerator    []generator `json:"secretGenerator"`
}

type kustImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

type generator struct {
	Name  string   `json:"name"`
	Files []string `json:"files,omitempty"`
	Envs  []string `json:"envs,omitempty"`
}

// objects are the Kubernetes objects that kustomization.yaml applies.
type objects struct {
	kust         kustomization
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	pdbs         []*policyv1.PodDisruptionBudget
}

// decodeDocument decodes one YAML document into its typed API object,
// strictly: an unknown or misspelt field, or a value of the wrong type, is
// an error, as the API server's strict field validation would report it.
func decodeDocument(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	default:
		return nil, fmt.Errorf("a %s %q, which the test does not know", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// documents splits a YAML stream into its documents, leaving out empty
// ones (comments only).
func documents(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), b...), []byte("\n---\n")) {
		var m map[string]any
		if err := yaml.Unmarshal(d, &m); err != nil || len(m) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

// loadObjects reads kustomization.yaml and decodes every resource it
// lists; every other YAML file in the directory must be one of them.
func loadObjects(t *testing.T) *objects {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(kubeDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	o := &objects{}
	if err := yaml.UnmarshalStrict(b, &o.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if o.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || o.kust.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is a %s %s", o.kust.APIVersion, o.kust.Kind)
	}
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(o.kust.Resources, base) {
			t.Errorf("%s is not among kustomization.yaml's resources: kubectl apply -k would leave it out", base)
		}
	}
	for _, r := range o.kust.Resources {
		b, err := os.ReadFile(filepath.Join(kubeDir, r))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(b) {
			obj, err := decodeDocument(doc)
			if err != nil {
				t.Fatalf("%s, document %d: %v", r, i+1, err)
			}
			switch obj := obj.(type) {
			case *appsv1.StatefulSet:
				o.statefulSets = append(o.statefulSets, obj)
			case *corev1.Service:
				o.services = append(o.services, obj)
			case *policyv1.PodDisruptionBudget:
				o.pdbs = append(o.pdbs, obj)
			}
		}
	}
	if len(o.statefulSets) != 1 || len(o.services) == 0 || len(o.pdbs) != 1 {
		t.Fatalf("the manifests hold %d StatefulSets, %d Services and %d PodDisruptionBudgets; want 1, some and 1",
			len(o.statefulSets), len(o.services), len(o.pdbs))
	}
	return o
}

// replicas returns the conftraced StatefulSet, its pod template and its
// conftraced container.
func (o *objects) replicas(t *testing.T) (*appsv1.StatefulSet, *corev1.PodTemplateSpec, *corev1.Container) {
	t.Helper()
	ss := o.statefulSets[0]
	for i := range ss.Spec.Template.Spec.Containers {
		if c := &ss.Spec.Template.Spec.Containers[i]; c.Name == "conftraced" {
			return ss, &ss.Spec.Template, c
		}
	}
	t.Fatalf("StatefulSet %s has no container named conftraced", ss.Name)
	return nil, nil, nil
}

func (o *objects) service(t *testing.T, name string) *corev1.Service {
	t.Helper()
	for _, s := range o.services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no Service %s", name)
	return nil
}

// args returns the container's arguments by flag name. They must all be
// --name=value, which reads the same to conftraced and to this test.
func args(t *testing.T, c *corev1.Container) map[string]string {
	t.Helper()
	for _, a := range c.Args {
		if !strings.HasPrefix(a, "--") || !strings.Contains(a, "=") {
			t.Errorf("container %s: argument %q is not --flag=value", c.Name, a)
		}
	}
	return flagValues(c.Args, nil)
}

// listenPort returns the port of a host:port flag value.
func listenPort(t *testing.T, flag, addr string) int32 {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("--%s=%s: %v", flag, addr, err)
	}
	if host != "0.0.0.0" && host != "" && host != "::" {
		t.Errorf("--%s=%s listens on %s only: neither the kubelet's probes nor a Service reach it", flag, addr, host)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatalf("--%s=%s: port: %v", flag, addr, err)
	}
	return int32(p)
}

// containerPort resolves a port by name or number to a port the container
// declares, or 0.
func containerPort(c *corev1.Container, p intstr.IntOrString) int32 {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	return 0
}

// The manifests are the objects the API server accepts: every field is
// one of its type, with a value of the right type. A misspelt field, which
// kubectl apply would drop or refuse, fails the check.
func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	loadObjects(t)
	b, err := os.ReadFile(filepath.Join(kubeDir, "statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]string{
		{"readinessProbe:", "readynessProbe:"},
		{"replicas: 3", "replicas: three"},
		{"kind: StatefulSet", "kind: StatefulSets"},
	} {
		if !bytes.Contains(b, []byte(bad[0])) {
			t.Fatalf("statefulset.yaml has no %q to spoil", bad[0])
		}
		if _, err := decodeDocument(bytes.Replace(b, []byte(bad[0]), []byte(bad[1]), 1)); err == nil {
			t.Errorf("a StatefulSet with %q instead of %q decodes", bad[1], bad[0])
		}
	}
}

// Every container runs as the image's non-root user, on a read-only root
// filesystem, without privileges, within resource limits.
func TestKubernetesPodsRunLockedDown(t *testing.T) {
	o := loadObjects(t)
	_, tmpl, _ := o.replicas(t)
	uid, _ := containerfileUser(t, loadContainerfile(t))
	spec := tmpl.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pods mount a service account token; conftraced never calls the Kubernetes API")
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		sc := effectiveSecurity(spec.SecurityContext, c.SecurityContext)
		switch {
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
			t.Errorf("container %s: runAsNonRoot is not set", c.Name)
		case sc.RunAsUser == nil || *sc.RunAsUser != uid:
			t.Errorf("container %s: runAsUser is not %d, the image's user", c.Name, uid)
		}
		if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
			t.Errorf("container %s: the root filesystem is writable", c.Name)
		}
		if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation ||
			(c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged) {
			t.Errorf("container %s: may gain privileges", c.Name)
		}
		if c.SecurityContext == nil || c.SecurityContext.Capabilities == nil || !slices.Contains(c.SecurityContext.Capabilities.Drop, "ALL") {
			t.Errorf("container %s: keeps the default capabilities", c.Name)
		}
		checkResources(t, c)
	}
}

// effectiveSecurity is the pod's security context with the container's
// run-as settings over it.
func effectiveSecurity(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) corev1.SecurityContext {
	var sc corev1.SecurityContext
	if pod != nil {
		sc.RunAsNonRoot, sc.RunAsUser = pod.RunAsNonRoot, pod.RunAsUser
	}
	if c != nil && c.RunAsNonRoot != nil {
		sc.RunAsNonRoot = c.RunAsNonRoot
	}
	if c != nil && c.RunAsUser != nil {
		sc.RunAsUser = c.RunAsUser
	}
	return sc
}

// checkResources requires CPU and memory requests and limits, limits not
// below requests, and a Go memory limit (GOMEMLIMIT) below the container's,
// so that Go collects garbage harder before the kernel kills it.
func checkResources(t *testing.T, c corev1.Container) {
	t.Helper()
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[r]
		lim, okLim := c.Resources.Limits[r]
		switch {
		case !okReq || !okLim:
			t.Errorf("container %s: %s request or limit missing", c.Name, r)
		case lim.Cmp(req) < 0:
			t.Errorf("container %s: %s limit %s below its request %s", c.Name, r, lim.String(), req.String())
		}
	}
	mem, ok := c.Resources.Limits[corev1.ResourceMemory]
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" || !ok {
			continue
		}
		// GOMEMLIMIT's units are KiB, MiB, GiB...; a quantity's Ki, Mi, Gi.
		q, err := resource.ParseQuantity(strings.TrimSuffix(strings.Replace(e.Value, "iB", "i", 1), "B"))
		if err != nil {
			t.Errorf("container %s: GOMEMLIMIT=%s: %v", c.Name, e.Value, err)
		} else if q.Cmp(mem) >= 0 {
			t.Errorf("container %s: GOMEMLIMIT=%s is not below the memory limit %s", c.Name, e.Value, mem.String())
		}
	}
}
