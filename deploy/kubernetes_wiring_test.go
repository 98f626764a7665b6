package deploy

import (
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/service"
)

// The kubelet's probes ask conftraced's health endpoint on the port it
// listens on: a probe elsewhere would fail and restart healthy replicas,
// or pass for dead ones.
func TestKubernetesProbesAskHealth(t *testing.T) {
	o := loadObjects(t)
	_, _, c := o.replicas(t)
	listen := listenPort(t, "listen", args(t, c)["listen"])
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		switch {
		case p == nil || p.HTTPGet == nil:
			t.Errorf("no HTTP %s probe", name)
		case p.HTTPGet.Path != api.PathHealth:
			t.Errorf("the %s probe asks %s; conftraced's health endpoint is %s", name, p.HTTPGet.Path, api.PathHealth)
		case containerPort(c, p.HTTPGet.Port) != listen:
			t.Errorf("the %s probe asks port %s; conftraced listens on %d", name, p.HTTPGet.Port.String(), listen)
		}
	}
}

// The Services send traffic to the replicas, on the ports conftraced
// listens on: the public one to --listen only, the metrics one to
// --metrics-listen; and the StatefulSet's headless Service exists.
func TestKubernetesServicesSelectReplicas(t *testing.T) {
	o := loadObjects(t)
	ss, tmpl, c := o.replicas(t)
	a := args(t, c)
	want := map[string]int32{
		"conftraced":         listenPort(t, "listen", a["listen"]),
		"conftraced-peers":   listenPort(t, "listen", a["listen"]),
		"conftraced-metrics": listenPort(t, "metrics-listen", a["metrics-listen"]),
	}
	pods := labels.Set(tmpl.Labels)
	sel, err := metav1.LabelSelectorAsSelector(ss.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(pods) {
		t.Errorf("the StatefulSet's selector %v does not select its pods (%v)", ss.Spec.Selector, err)
	}
	for _, s := range o.services {
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(pods) {
			t.Errorf("Service %s selects %v, not the replicas (%v)", s.Name, s.Spec.Selector, tmpl.Labels)
		}
		port, known := want[s.Name]
		if !known {
			t.Errorf("Service %s: the test does not know what it is for", s.Name)
		}
		for _, p := range s.Spec.Ports {
			if got := containerPort(c, p.TargetPort); got != port {
				t.Errorf("Service %s port %s targets container port %d, want %d", s.Name, p.Name, got, port)
			}
		}
	}
	if peers := o.service(t, ss.Spec.ServiceName); peers.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("the StatefulSet's Service %s is not headless", peers.Name)
	}
}

// The disruption budget covers the replicas and lets a drain take one at
// a time, never all of them.
func TestKubernetesDisruptionBudget(t *testing.T) {
	o := loadObjects(t)
	ss, tmpl, _ := o.replicas(t)
	pdb := o.pdbs[0]
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(tmpl.Labels)) {
		t.Errorf("PodDisruptionBudget %s selects %v, not the replicas %v (%v)", pdb.Name, pdb.Spec.Selector, tmpl.Labels, err)
	}
	if ss.Spec.Replicas == nil || *ss.Spec.Replicas < 2 {
		t.Fatalf("the StatefulSet runs %v replicas; a budget over one either blocks every drain or protects nothing", ss.Spec.Replicas)
	}
	n := *ss.Spec.Replicas
	var down int32
	switch {
	case pdb.Spec.MaxUnavailable != nil && pdb.Spec.MaxUnavailable.Type == intstr.Int:
		down = pdb.Spec.MaxUnavailable.IntVal
	case pdb.Spec.MinAvailable != nil && pdb.Spec.MinAvailable.Type == intstr.Int:
		down = n - pdb.Spec.MinAvailable.IntVal
	default:
		t.Fatal("the budget gives no whole number of replicas (maxUnavailable or minAvailable)")
	}
	if down < 1 || down >= n {
		t.Errorf("the budget lets %d of %d replicas go at once; want at least 1 and fewer than all", down, n)
	}
}

// generated returns the keys of each object kustomization.yaml
// generates, by "ConfigMap/name" or "Secret/name". The keys of an env
// file, which the deployment writes, are those of its example beside
// kustomization.yaml (local/x.env: x.env.example).
func generated(t *testing.T, k kustomization) map[string][]string {
	t.Helper()
	keys := map[string][]string{}
	add := func(kind string, g generator) {
		id := kind + "/" + g.Name
		for _, f := range slices.Concat(g.Files, g.Envs) {
			_, src, ok := strings.Cut(f, "=")
			if !ok {
				src = f
			}
			if !strings.HasPrefix(src, "local/") {
				t.Errorf("%s is generated from %s, outside local/, which git ignores", id, src)
			}
		}
		for _, f := range g.Files {
			key, _, ok := strings.Cut(f, "=")
			if !ok {
				key = path.Base(f)
			}
			keys[id] = append(keys[id], key)
		}
		for _, e := range g.Envs {
			keys[id] = append(keys[id], envFileKeys(t, path.Base(e)+".example")...)
		}
	}
	for _, g := range k.ConfigMapGenerator {
		add("ConfigMap", g)
	}
	for _, g := range k.SecretGenerator {
		add("Secret", g)
	}
	ignore, err := os.ReadFile(filepath.Join(kubeDir, ".gitignore"))
	if err != nil || !slices.Contains(strings.Fields(string(ignore)), "/local/") {
		t.Errorf("deploy/kubernetes/.gitignore does not ignore /local/, where the password goes (%v)", err)
	}
	return keys
}

// envFileKeys returns the keys of an env file in deploy/kubernetes.
func envFileKeys(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(kubeDir, name))
	if err != nil {
		t.Fatalf("the keys of a generated env file: %v", err)
	}
	var keys []string
	for _, l := range strings.Split(string(b), "\n") {
		if k, _, ok := strings.Cut(strings.TrimSpace(l), "="); ok && !strings.HasPrefix(l, "#") {
			keys = append(keys, k)
		}
	}
	return keys
}

// Every Secret and ConfigMap key the pods refer to is one that
// kustomization.yaml generates: a missing key leaves the pod unable to
// start. The PostgreSQL password reaches conftraced from the Secret,
// through PGPASSWORD, and nowhere on its command line.
func TestKubernetesReferencesExist(t *testing.T) {
	o := loadObjects(t)
	_, tmpl, c := o.replicas(t)
	keys := generated(t, o.kust)
	ref := func(what, id, key string) {
		if _, ok := keys[id]; !ok {
			t.Errorf("%s refers to %s, which kustomization.yaml does not generate", what, id)
		} else if key != "" && !slices.Contains(keys[id], key) {
			t.Errorf("%s refers to key %s of %s, which has %v", what, key, id, keys[id])
		}
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
		switch {
		case e.ValueFrom == nil:
		case e.ValueFrom.SecretKeyRef != nil:
			ref("env "+e.Name, "Secret/"+e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref("env "+e.Name, "ConfigMap/"+e.ValueFrom.ConfigMapKeyRef.Name, e.ValueFrom.ConfigMapKeyRef.Key)
		}
	}
	for _, v := range tmpl.Spec.Volumes {
		for _, it := range volumeItems(v) {
			ref("volume "+v.Name, volumeSource(v), it.Key)
		}
	}
	if pw := env["PGPASSWORD"]; pw.ValueFrom == nil || pw.ValueFrom.SecretKeyRef == nil {
		t.Error("PGPASSWORD does not come from a Secret")
	}
	store, err := url.Parse(args(t, c)["store"])
	if err != nil || (store.Scheme != "postgres" && store.Scheme != "postgresql") {
		t.Fatalf("--store is not a postgres:// URL (%v)", err)
	}
	if _, ok := store.User.Password(); ok || store.Query().Has("password") {
		t.Error("--store holds a password, which anyone who lists the pods reads")
	}
	if m := env["PGSSLMODE"].Value; m != "verify-full" && m != "verify-ca" {
		t.Errorf("PGSSLMODE=%q: conftraced does not check whom it connects to", m)
	}
	if src, key := mountedFile(tmpl, c, env["PGSSLROOTCERT"].Value); src == "" {
		t.Errorf("PGSSLROOTCERT=%s is not a file a volume provides", env["PGSSLROOTCERT"].Value)
	} else {
		ref("PGSSLROOTCERT", src, key)
	}
}

// volumeSource returns "Secret/name" or "ConfigMap/name" for a volume of
// those kinds, else "".
func volumeSource(v corev1.Volume) string {
	switch {
	case v.Secret != nil:
		return "Secret/" + v.Secret.SecretName
	case v.ConfigMap != nil:
		return "ConfigMap/" + v.ConfigMap.Name
	}
	return ""
}

func volumeItems(v corev1.Volume) []corev1.KeyToPath {
	switch {
	case v.Secret != nil:
		return v.Secret.Items
	case v.ConfigMap != nil:
		return v.ConfigMap.Items
	}
	return nil
}

// mountedFile returns the Secret or ConfigMap ("Kind/name") and the key
// that provide the file at p in container c, or "" if none does.
func mountedFile(tmpl *corev1.PodTemplateSpec, c *corev1.Container, p string) (src, key string) {
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(p, m.MountPath+"/")
		if m.SubPath != "" {
			rel, ok = m.SubPath, p == m.MountPath
		}
		if !ok {
			continue
		}
		for _, v := range tmpl.Spec.Volumes {
			if v.Name != m.Name || volumeSource(v) == "" {
				continue
			}
			items := volumeItems(v)
			if len(items) == 0 {
				return volumeSource(v), rel
			}
			for _, it := range items {
				if it.Path == rel {
					return volumeSource(v), it.Key
				}
			}
		}
	}
	return "", ""
}

// The container's arguments are flags conftraced takes, as its own flag
// set parses them, and the files they name are there: a writable data
// directory, the policy from its ConfigMap, and in the simulated TEE one
// platform key for every replica (else each derives its own sealing key
// and cannot open the key-encryption key the first one stored).
func TestKubernetesArgsAreConftracedFlags(t *testing.T) {
	o := loadObjects(t)
	_, tmpl, c := o.replicas(t)
	if len(c.Command) > 0 {
		t.Errorf("the container replaces the image's entry point with %q", c.Command)
	}
	ct := buildConftraced(t)
	ct.checkArgs(t, "statefulset.yaml", c.Args)
	a := args(t, c)
	for _, f := range []string{"tee", "data", "policy", "listen"} {
		if a[f] == "" {
			t.Errorf("no --%s: conftraced's default does not suit a replica", f)
		}
	}
	if !writableDir(tmpl, c, a["data"]) {
		t.Errorf("--data=%s is not a writable volume", a["data"])
	}
	if src, key := mountedFile(tmpl, c, a["policy"]); src != "ConfigMap/conftrace-policy" || key != "policy.json" {
		t.Errorf("--policy=%s is %s key %q, not the policy's ConfigMap", a["policy"], src, key)
	}
	if a["tee"] == "sim" {
		if src, _ := mountedFile(tmpl, c, path.Join(a["data"], service.SimKeyFile)); !strings.HasPrefix(src, "Secret/") {
			t.Errorf("--tee=sim: %s is not the replicas' shared key from a Secret", path.Join(a["data"], service.SimKeyFile))
		}
	}
}

// writableDir reports whether dir is the mount point of a writable
// emptyDir or persistent volume in c.
func writableDir(tmpl *corev1.PodTemplateSpec, c *corev1.Container, dir string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir || m.ReadOnly || m.SubPath != "" {
			continue
		}
		for _, v := range tmpl.Spec.Volumes {
			if v.Name == m.Name && (v.EmptyDir != nil || v.PersistentVolumeClaim != nil) {
				return true
			}
		}
	}
	return false
}
