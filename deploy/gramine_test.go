package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var gramineTemplate = filepath.Join(repoRoot, "deploy", "gramine", "conftraced.manifest.template")

// leftOutOfGramine are conftraced's flags that the Gramine manifest does
// not pass, and why. A flag conftraced gains must be passed or listed
// here: the manifest fixes the enclave's command line in its measurement.
var leftOutOfGramine = map[string]string{
	"addr-file": "for scripts that start conftraced on port 0; the manifest names its port",
	"pccs":      "the manifest reads the collateral from /collateral, which the host refreshes, so that no PCCS URL is measured",
	"peer":      "a URL here is measured, so every replica would have to pass the same one; key release under SGX is not set up yet (deploy/gramine/README.md)",
}

// gramineVariants are -D values that, between them, take every branch of
// the template.
var gramineVariants = []map[string]string{
	{"metrics_listen": "", "store": "sqlite"},
	{"metrics_listen": "0.0.0.0:9090", "store": "postgres"},
}

// templateTag is a Jinja tag of the kinds the manifest uses: {{ name }},
// {% if name %}, {% if name == "value" %} and {% endif %}, each with
// optional whitespace control.
var templateTag = regexp.MustCompile(`\{\{-?\s*([\w.]+)\s*-?\}\}|\{%-?\s*(if|endif)\s*([^%]*?)\s*-?%\}`)

var ifEquals = regexp.MustCompile(`^(\w+)\s*==\s*"([^"]*)"$`)

// renderTemplate renders the manifest template with vars, as
// gramine-manifest would for the tags above (an undefined variable is an
// error, as with its StrictUndefined); whitespace control is ignored.
func renderTemplate(tmpl string, vars map[string]string) (string, error) {
	var out strings.Builder
	var conds []bool
	on := func() bool { return !slices.Contains(conds, false) }
	last := 0
	for _, m := range templateTag.FindAllStringSubmatchIndex(tmpl, -1) {
		if on() {
			out.WriteString(tmpl[last:m[0]])
		}
		last = m[1]
		tag := func(i int) string {
			if m[2*i] < 0 {
				return ""
			}
			return tmpl[m[2*i]:m[2*i+1]]
		}
		switch {
		case tag(1) != "":
			v, ok := vars[tag(1)]
			if !ok {
				return "", fmt.Errorf("%q is undefined", tag(1))
			}
			if on() {
				out.WriteString(v)
			}
		case tag(2) == "endif":
			if len(conds) == 0 {
				return "", fmt.Errorf("endif without if")
			}
			conds = conds[:len(conds)-1]
		default:
			name, want, eq := tag(3), "", false
			if sm := ifEquals.FindStringSubmatch(name); sm != nil {
				name, want, eq = sm[1], sm[2], true
			}
			v, ok := vars[name]
			if !ok {
				return "", fmt.Errorf("%q is undefined", name)
			}
			conds = append(conds, (eq && v == want) || (!eq && v != ""))
		}
	}
	if len(conds) > 0 {
		return "", fmt.Errorf("if without endif")
	}
	out.WriteString(tmpl[last:])
	return out.String(), nil
}

// tomlStrings returns the quoted strings of the TOML array key = [...].
func tomlStrings(t *testing.T, manifest, key string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?ms)^` + regexp.QuoteMeta(key) + ` = \[(.*?)^\]`).FindStringSubmatch(manifest)
	if m == nil {
		t.Fatalf("the manifest has no %s array", key)
	}
	var ss []string
	for _, l := range strings.Split(m[1], "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		for _, q := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(l, -1) {
			ss = append(ss, q[1])
		}
	}
	return ss
}

// gramineVars returns the template's variables with sample values and v.
func gramineVars(v map[string]string) map[string]string {
	vars := map[string]string{
		"gramine.libos": "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so",
		"listen":        "0.0.0.0:8080", "enclave_size": "8G", "gomemlimit": "6GiB",
		"gomaxprocs": "8", "max_threads": "64", "isvprodid": "1", "isvsvn": "1",
	}
	for k, x := range v {
		vars[k] = x
	}
	return vars
}

// The enclave's fixed command line is one conftraced takes, in every
// variant of the template; every file it names is mounted; and every flag
// of conftraced is either passed or deliberately left out.
func TestGramineManifestFollowsConftraced(t *testing.T) {
	b, err := os.ReadFile(gramineTemplate)
	if err != nil {
		t.Fatal(err)
	}
	ct := buildConftraced(t)
	passed := map[string]bool{}
	for _, v := range gramineVariants {
		manifest, err := renderTemplate(string(b), gramineVars(v))
		if err != nil {
			t.Fatalf("rendering the manifest with %v: %v", v, err)
		}
		argv := tomlStrings(t, manifest, "loader.argv")
		if len(argv) < 2 || argv[0] != "/conftraced" {
			t.Fatalf("with %v: loader.argv is %q", v, argv)
		}
		ct.checkArgs(t, fmt.Sprintf("the Gramine manifest with %v", v), argv[1:])
		vals := flagValues(argv[1:], ct.flags)
		for f := range vals {
			passed[f] = true
		}
		if vals["tee"] != "sgx" {
			t.Errorf("with %v: --tee is %q, not sgx", v, vals["tee"])
		}
		var mounts []string
		for _, l := range strings.Split(manifest, "\n") {
			if m := regexp.MustCompile(`path = "([^"]+)"`).FindStringSubmatch(l); m != nil {
				mounts = append(mounts, m[1])
			}
		}
		for _, f := range []string{"data", "policy", "release", "collateral", "addr-file"} {
			if p, ok := vals[f]; ok && !slices.ContainsFunc(mounts, func(m string) bool { return p == m || strings.HasPrefix(p, m+"/") }) {
				t.Errorf("with %v: --%s=%s is not in any of the manifest's mounts %v", v, f, p, mounts)
			}
		}
	}
	for f := range ct.flags {
		if _, left := leftOutOfGramine[f]; !passed[f] && !left {
			t.Errorf("conftraced takes --%s, which the Gramine manifest neither passes nor lists as left out (leftOutOfGramine)", f)
		}
	}
	for f := range leftOutOfGramine {
		if passed[f] {
			t.Errorf("leftOutOfGramine lists --%s, which the manifest passes", f)
		}
	}
}

// Every variable of the template is explained in its header and in the
// README's table, since every value is part of the measurement and
// auditors must pass the same.
func TestGramineVariablesDocumented(t *testing.T) {
	b, err := os.ReadFile(gramineTemplate)
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "gramine", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := renderTemplate(string(b), gramineVars(gramineVariants[0])); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range templateTag.FindAllStringSubmatch(string(b), -1) {
		name := m[1]
		if sm := ifEquals.FindStringSubmatch(m[3]); sm != nil {
			name = sm[1]
		} else if m[2] == "if" {
			name = m[3]
		}
		if name == "" || strings.HasPrefix(name, "gramine.") || seen[name] {
			continue
		}
		seen[name] = true
		if !regexp.MustCompile(`(?m)^#   ` + name + ` `).Match(b) {
			t.Errorf("the template's header does not explain %s", name)
		}
		if !strings.Contains(string(readme), "| `"+name+"` |") {
			t.Errorf("deploy/gramine/README.md's table has no row for %s", name)
		}
	}
}
