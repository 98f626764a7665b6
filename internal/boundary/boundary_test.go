package boundary

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/conftrace/conftrace"

// image is the measured image's main package.
const image = module + "/cmd/conftraced"

// What each package of the measured image handles, as auditors read it.
// Every package of the module that cmd/conftraced imports is listed, and
// nothing else: adding a package to the image means deciding here, and in
// the README's table, what it sees.
const (
	plaintext = "plaintext" // personal data in the clear
	keys      = "keys"      // the TEE's evidence and sealing keys
	sealed    = "sealed"    // sealed bytes only
	public    = "public"    // no personal data: policy, attestation, wiring
)

var measured = map[string]string{
	"cmd/conftraced":          public,
	"internal/service":        plaintext, // holds the OHTTP private keys and the sealing key on its way to the enclave
	"internal/server":         plaintext, // decrypts Oblivious HTTP and decodes the inner requests
	"internal/enclave":        plaintext,
	"internal/matchindex":     plaintext,
	"internal/gpsindex":       plaintext,
	"internal/seal":           plaintext,
	"ohttp":                   plaintext,
	"bhttp":                   plaintext,
	"api":                     plaintext,
	"contactlog":              plaintext,
	"enid":                    plaintext,
	"gps":                     plaintext,
	"gaen":                    plaintext, // infected users' daily keys from imported exports
	"gaen/internal/pb":        plaintext,
	"certificate":             plaintext, // exposure certificates, encoded and signed in the enclave
	"internal/tee":            keys,
	"internal/tee/sim":        keys,
	"internal/tee/gramine":    keys,
	"internal/tee/tdx":        keys,
	"internal/tee/snp":        keys,
	"internal/tee/tsm":        keys,
	"internal/store":          sealed,
	"internal/store/sqlite":   sealed,
	"internal/store/postgres": sealed,
	"internal/httpserve":      sealed, // sees only Oblivious HTTP ciphertext
	"internal/calendar":       public,
	"policy":                  public,
	"release":                 public, // the release statement the bundle carries
	"attest":                  public,
	"attest/sim":              public,
	"attest/sgx":              public,
	"attest/snp":              public,
	"attest/tdx":              public, // verifies a peer replica's TDX evidence before releasing the KEK
	"internal/keyrelease":     keys,   // the KEK, sealed to an attested peer replica
	"atomicfile":              public,
	"internal/opsmetrics":     public, // outer requests, store timings, coarse index size: what the host sees anyway
	"internal/transparency":   public, // the public page at "/": the bundle and policy in words
}

// imageModules are the modules other than conftrace's own and the standard
// library that the measured image may contain.
var imageModules = []string{
	"github.com/beorn7/perks",       // client_golang
	"github.com/cespare/xxhash/v2",  // client_golang
	"github.com/dustin/go-humanize", // modernc.org/sqlite
	"github.com/google/go-configfs-tsm",
	"github.com/google/go-sev-guest",
	"github.com/google/go-tdx-guest", // attest/tdx: peers' evidence
	"github.com/google/logger",       // go-sev-guest
	"github.com/google/uuid",         // modernc.org/sqlite
	"github.com/jackc/pgpassfile",    // pgx
	"github.com/jackc/pgservicefile", // pgx
	"github.com/jackc/pgx/v5",
	"github.com/jackc/puddle/v2",   // pgx's pool
	"github.com/munnerz/goautoneg", // prometheus/common
	"github.com/prometheus/client_golang",
	"github.com/prometheus/client_model", // client_golang
	"github.com/prometheus/common",       // client_golang
	"github.com/prometheus/procfs",       // client_golang (its process collector, not registered)
	"github.com/remyoudompheng/bigfft",   // modernc.org/sqlite
	"go.uber.org/multierr",               // go-configfs-tsm
	"golang.org/x/crypto",                // go-sev-guest
	"golang.org/x/sync",                  // puddle
	"golang.org/x/sys",
	"golang.org/x/text",          // pgx: SASLprep of passwords
	"google.golang.org/protobuf", // go-sev-guest
	"modernc.org/libc",
	"modernc.org/mathutil",
	"modernc.org/memory",
	"modernc.org/sqlite",
}

// pkg is what the test reads of "go list -deps -json".
type pkg struct {
	ImportPath string
	Imports    []string
	Standard   bool
	Module     *struct{ Path string }
}

// graph is the import graph of the module's packages and their deps.
type graph map[string]*pkg

func loadGraph(t *testing.T) graph {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command:", err)
	}
	cmd := exec.Command("go", "list", "-deps", "-json", module+"/...")
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	g := graph{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		g[p.ImportPath] = &p
	}
	return g
}

// rel is a package path relative to the module, or the path itself for
// packages of other modules.
func rel(p string) string {
	if p == module {
		return "."
	}
	return strings.TrimPrefix(p, module+"/")
}

func own(p string) bool { return p == module || strings.HasPrefix(p, module+"/") }

func under(p, dir string) bool {
	r := rel(p)
	return own(p) && (r == dir || strings.HasPrefix(r, dir+"/"))
}

// chain returns the shortest import chain from root to a package that bad
// matches, as "a -> b -> c", or "" if root depends on none.
func (g graph) chain(root string, bad func(string) bool) string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p != root && bad(p) {
			var path []string
			for q := p; q != ""; q = prev[q] {
				path = append(path, rel(q))
			}
			slices.Reverse(path)
			return strings.Join(path, " -> ")
		}
		if g[p] == nil {
			continue
		}
		for _, d := range g[p].Imports {
			if _, seen := prev[d]; !seen {
				prev[d] = p
				queue = append(queue, d)
			}
		}
	}
	return ""
}

// rule is one dependency rule: no package that from selects may depend,
// directly or not, on a package that forbid selects.
type rule struct {
	name   string
	from   func(p string) bool
	forbid func(p string) bool
}

var rules = []rule{
	{
		name:   "public packages, which app and health-authority developers import, never import internal/",
		from:   func(p string) bool { return own(p) && !under(p, "internal") && !under(p, "cmd") },
		forbid: func(p string) bool { return under(p, "internal") },
	},
	{
		name: "stores see only sealed bytes: they never import the enclave, the sealing or the TEE",
		from: func(p string) bool { return under(p, "internal/store") },
		forbid: func(p string) bool {
			return under(p, "internal/enclave") || under(p, "internal/seal") || under(p, "internal/tee")
		},
	},
	{
		name: "the enclave logic knows nothing of HTTP, SQL or a particular TEE",
		from: func(p string) bool { return under(p, "internal/enclave") },
		forbid: func(p string) bool {
			return p == "net/http" || p == "database/sql" || under(p, "internal/store/sqlite") || under(p, "internal/store/postgres") ||
				under(p, "internal/tee") || under(p, "internal/server") || under(p, "internal/service")
		},
	},
	{
		name: "the HTTP layer only decodes the channel and hands requests to the enclave logic",
		from: func(p string) bool { return under(p, "internal/server") },
		forbid: func(p string) bool {
			return p == "database/sql" || under(p, "internal/store") || under(p, "internal/seal") ||
				under(p, "internal/matchindex") || under(p, "internal/gpsindex") || under(p, "internal/tee")
		},
	},
	{
		name: "the indexes hold plaintext in memory and know nothing of storage, sealing or HTTP",
		from: func(p string) bool { return under(p, "internal/matchindex") || under(p, "internal/gpsindex") },
		forbid: func(p string) bool {
			return p == "net/http" || p == "database/sql" || under(p, "internal/store") || under(p, "internal/seal")
		},
	},
	{
		// A benchmark that starts the whole backend (bench load) uses the
		// same helper as the demo; nothing else may.
		name: "the simulator, the benchmarks and the test helpers are imported only by cmd/conftrace and the benchmarks",
		from: func(p string) bool { return own(p) && !under(p, "cmd/conftrace") && !strings.Contains(rel(p), "bench") },
		forbid: func(p string) bool {
			return under(p, "internal/population") || under(p, "internal/localbackend") ||
				under(p, "internal/cmdtest") || strings.Contains(rel(p), "bench")
		},
	},
}

// violations returns one message per package that breaks a rule, naming the
// rule and the import chain.
func (g graph) violations() []string {
	var msgs []string
	for _, r := range rules {
		for p := range g {
			if !r.from(p) {
				continue
			}
			if c := g.chain(p, r.forbid); c != "" {
				msgs = append(msgs, fmt.Sprintf("%s: %s", r.name, c))
			}
		}
	}
	slices.Sort(msgs)
	return msgs
}

// imageViolations returns what the measured image holds that it may not:
// packages of the module missing from measured, other modules missing
// from imageModules.
func (g graph) imageViolations() []string {
	var msgs []string
	deps := g.chainsFrom(image)
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for p := range deps {
			if !yield(p) {
				return
			}
		}
	}) {
		switch {
		case own(p):
			if _, ok := measured[rel(p)]; !ok {
				msgs = append(msgs, fmt.Sprintf("the measured image holds %s, which is not in its list (what does it see?): %s", rel(p), deps[p]))
			}
		case g[p] != nil && !g[p].Standard && g[p].Module != nil && !slices.Contains(imageModules, g[p].Module.Path):
			msgs = append(msgs, fmt.Sprintf("the measured image holds module %s, which is not in its list: %s", g[p].Module.Path, deps[p]))
		}
	}
	for r := range measured {
		if _, ok := deps[module+"/"+r]; !ok && r != "cmd/conftraced" {
			msgs = append(msgs, fmt.Sprintf("%s is listed as part of the measured image but the image does not import it", r))
		}
	}
	slices.Sort(msgs)
	return msgs
}

// chainsFrom returns every package root depends on, with an import chain
// that leads to it.
func (g graph) chainsFrom(root string) map[string]string {
	chains := map[string]string{root: rel(root)}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if g[p] == nil {
			continue
		}
		for _, d := range g[p].Imports {
			if _, seen := chains[d]; !seen {
				chains[d] = chains[p] + " -> " + rel(d)
				queue = append(queue, d)
			}
		}
	}
	return chains
}

func TestTrustBoundary(t *testing.T) {
	g := loadGraph(t)
	if g[image] == nil {
		t.Fatalf("go list does not know %s", image)
	}
	for _, m := range g.violations() {
		t.Error(m)
	}
	for _, m := range g.imageViolations() {
		t.Error(m)
	}
}

// readmeRow is a row of the README's table of the measured image:
// | `package` | role | ... |
var readmeRow = regexp.MustCompile("^\\| `([a-z0-9/]+)` \\| ([a-z]+) \\|")

// The README tells auditors which packages the measured image holds and
// what each sees; that table must be the one this test enforces.
func TestReadmeListsMeasuredImage(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- measured-image:begin -->", "<!-- measured-image:end -->"
	s, ok := strings.CutPrefix(string(b)[strings.Index(string(b), begin)+1:], begin[1:])
	i := strings.Index(s, end)
	if !ok || i < 0 {
		t.Fatalf("README.md has no table between %s and %s", begin, end)
	}
	got := map[string]string{}
	for _, l := range strings.Split(s[:i], "\n") {
		if m := readmeRow.FindStringSubmatch(l); m != nil {
			got[m[1]] = m[2]
		}
	}
	for p, role := range measured {
		if got[p] != role {
			t.Errorf("README.md: %s sees %q in the measured image, the README says %q", p, role, got[p])
		}
	}
	for p := range got {
		if _, ok := measured[p]; !ok {
			t.Errorf("README.md lists %s in the measured image; it is not there", p)
		}
	}
}

// The rules catch what they are for: each forbidden import in a made-up
// graph is reported with its chain.
func TestRulesReportChains(t *testing.T) {
	m := func(p string) string { return module + "/" + p }
	g := graph{
		m("cmd/conftraced"):      {ImportPath: m("cmd/conftraced"), Imports: []string{m("internal/service")}},
		m("internal/service"):    {ImportPath: m("internal/service"), Imports: []string{m("internal/enclave"), m("internal/population")}},
		m("internal/enclave"):    {ImportPath: m("internal/enclave"), Imports: []string{"net/http"}},
		m("internal/population"): {ImportPath: m("internal/population")},
		m("internal/store/x"):    {ImportPath: m("internal/store/x"), Imports: []string{m("internal/seal")}},
		m("internal/seal"):       {ImportPath: m("internal/seal")},
		m("device"):              {ImportPath: m("device"), Imports: []string{m("internal/calendar")}},
		m("internal/calendar"):   {ImportPath: m("internal/calendar")},
		"net/http":               {ImportPath: "net/http", Standard: true},
		"example.com/new/module": {ImportPath: "example.com/new/module", Module: &struct{ Path string }{"example.com/new"}},
		m("internal/server"):     {ImportPath: m("internal/server"), Imports: []string{"example.com/new/module"}},
	}
	g[m("internal/service")].Imports = append(g[m("internal/service")].Imports, m("internal/server"))
	want := []string{
		"internal/enclave -> net/http",
		"cmd/conftraced -> internal/service -> internal/population",
		"internal/store/x -> internal/seal",
		"device -> internal/calendar",
	}
	got := strings.Join(g.violations(), "\n")
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("violations do not report %q:\n%s", w, got)
		}
	}
	img := strings.Join(g.imageViolations(), "\n")
	for _, w := range []string{
		"holds internal/population, which is not in its list",
		"holds module example.com/new, which is not in its list: cmd/conftraced -> internal/service -> internal/server -> example.com/new/module",
	} {
		if !strings.Contains(img, w) {
			t.Errorf("image violations do not report %q:\n%s", w, img)
		}
	}
}
