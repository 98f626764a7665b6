package transparency

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	teesim "github.com/conftrace/conftrace/internal/tee/sim"
	"github.com/conftrace/conftrace/ohttp"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// testBundle attests doc (a policy document) and release statement rel in
// a simulated TEE of the given measurement.
func testBundle(t *testing.T, doc, rel []byte, opts teesim.Options) attest.Bundle {
	t.Helper()
	tee, err := teesim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ohttp.GenerateKey(7, ohttp.KEMX25519, ohttp.SymmetricSuite{KDF: ohttp.KDFHKDFSHA256, AEAD: ohttp.AEADAES128GCM})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ohttp.MarshalKeyConfigs([]ohttp.KeyConfig{key.KeyConfig()})
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	b, err := attest.NewBundle(t.Context(), tee, attest.Bundle{
		KeyConfigs: keys, Policy: doc, Release: rel,
		IssuedAt: issued.Unix(), NotAfter: issued.Add(24 * time.Hour).Unix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func canonical(t *testing.T, p policy.Policy) []byte {
	t.Helper()
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

var testMeasurement = bytes.Repeat([]byte{0xab}, 32)

// get serves the page of b for a request to host, and returns the body.
func get(t *testing.T, p *Page, host string) (*http.Response, string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Host = host
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	resp := w.Result()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	return resp, string(body)
}

// text returns the page's text as a reader sees it: tags dropped (block
// elements' as spaces), entities decoded and white space folded.
func text(page string) string {
	page = regexp.MustCompile(`(?s)<style>.*?</style>`).ReplaceAllString(page, " ")
	page = regexp.MustCompile(`</?(p|dt|dd|li|td|th|tr|h[1-6]|pre|div|section|caption|summary)\b[^>]*>`).ReplaceAllString(page, " ")
	page = regexp.MustCompile(`<[^>]*>`).ReplaceAllString(page, "")
	return strings.Join(strings.Fields(html.UnescapeString(page)), " ")
}

func mustContain(t *testing.T, page string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(page, w) {
			t.Errorf("the page does not say %q", w)
		}
	}
}

func mustNotContain(t *testing.T, page string, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(page, w) {
			t.Errorf("the page says %q", w)
		}
	}
}

func TestSimulatedTEESaysSo(t *testing.T) {
	p := policy.Default()
	b := testBundle(t, canonical(t, p), nil, teesim.Options{Measurement: testMeasurement})
	_, page := get(t, New(b, nil, nil), "backend.example:8443")
	txt := text(page)
	mustContain(t, txt,
		"Simulated TEE: no protection.",
		"it proves nothing about the code, and whoever runs the machine can read everything the backend holds",
		"None to judge. A simulated TEE has no platform",
		"Measurement (SHA-256 of the conftraced executable) "+hex.EncodeToString(testMeasurement),
		"The backend's host serves this page and could alter it.",
		"only conftrace verify, run on your own machine, proves which code runs",
		"./conftrace verify --server https://backend.example:8443 --tee sim --measurement "+hex.EncodeToString(testMeasurement)+" --allow-simulated",
		"sha256sum conftraced must print the measurement above",
		"from 2026-03-01 09:00 UTC until 2026-03-02 09:00 UTC",
		"key 7: DHKEM(X25519, HKDF-SHA256)",
		"Release statement None.",
		"Public statistics The policy releases no statistics.",
		"Exposure certificate key None: this backend issues no exposure certificates",
	)
	// A simulated TEE has no TCB: the page must not judge one.
	mustNotContain(t, txt, "this platform is accepted", "TCB status", "Not judged")
	sum := sha256.Sum256(b.Policy)
	mustContain(t, page, `id="policy-sha256">`+hex.EncodeToString(sum[:]))
}

// TestCertificateKey: the page names the key that exposure certificates are
// checked against, the one the bundle binds.
func TestCertificateKey(t *testing.T) {
	tee, err := teesim.New(teesim.Options{Measurement: testMeasurement})
	if err != nil {
		t.Fatal(err)
	}
	b := testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement})
	b.CertificateKey = bytes.Repeat([]byte{0x5c}, 32)
	if b, err = attest.NewBundle(t.Context(), tee, b); err != nil {
		t.Fatal(err)
	}
	_, page := get(t, New(b, nil, nil), "backend.example")
	mustContain(t, text(page), "Exposure certificate key Ed25519 "+strings.Repeat("5c", 32)+": hospitals check exposure certificates against it")
}

func TestRealTEEIsNotCalledSimulated(t *testing.T) {
	// The page of a TEE other than sim never carries the simulation's
	// banner, even when its evidence does not verify.
	b := testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement})
	b.Evidence = attest.Evidence{TEE: attest.SGX, Data: []byte("not a quote")}
	_, page := get(t, New(b, nil, nil), "backend.example")
	txt := text(page)
	mustNotContain(t, txt, "Simulated TEE", "None to judge")
	mustContain(t, txt,
		"Intel SGX enclave (under Gramine)",
		"The backend could not verify its own evidence as of the bundle's issue: sgx:",
		"Unknown: the evidence could not be read",
		"--tee sgx --measurement MEASUREMENT",
		"gramine-sgx-sigstruct-view must print the measurement above as mr_enclave",
	)
	mustNotContain(t, txt, "--allow-simulated", "this platform is accepted")
}

func TestEvidenceOfAnotherBundle(t *testing.T) {
	// Evidence that verifies but binds other keys or another policy is
	// not presented as this backend's.
	b := testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement})
	other := policy.Default()
	other.RetentionDays = 7
	b.Policy = canonical(t, other)
	_, page := get(t, New(b, nil, nil), "backend.example")
	txt := text(page)
	mustContain(t, txt, "could not verify its own evidence as of the bundle's issue: the evidence does not bind this bundle's keys, policy, validity and release statement")
	mustNotContain(t, page, hex.EncodeToString(testMeasurement))
}

func TestDebugEvidence(t *testing.T) {
	b := testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement, Debug: true})
	_, page := get(t, New(b, nil, nil), "backend.example")
	mustContain(t, text(page), "Debug mode Yes: the host can read the TEE's memory. Phones refuse it.")
}

// exportKey returns a GAEN export key's DER public key.
func exportKey(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestPolicyInWords(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	member, err := release.GenerateKey("auditor-1")
	if err != nil {
		t.Fatal(err)
	}
	der := exportKey(t)
	p := policy.Default()
	p.Authorities = []policy.Authority{{Name: "Cantonal lab", PublicKey: pub}}
	p.RetentionDays = 10
	p.UploadAuthorizationSeconds = 2 * 3600
	p.Matching = []string{policy.MatchReciprocal, policy.MatchOneSided}
	p.Answers = policy.AnswersDetailed
	p.GAENExportKeys = []policy.ExportKey{{Name: "de-cwa", PublicKey: der}}
	p.Governance = []policy.GovernanceMember{{Name: member.Name, PublicKey: member.PublicKey()}}
	p.Orders = policy.DefaultOrders(2, p.Risk.MinimumWeightedMinutes)
	p.Statistics = policy.NewStatistics(500)
	p.OperatorContact = "privacy@health.example"
	p.TCB = policy.TCB{SGXAccepted: []policy.SGXAccepted{{Status: attest.TCBSWHardeningNeeded, Advisories: []string{"INTEL-SA-00615"}}}}
	b := testBundle(t, canonical(t, p), nil, teesim.Options{Measurement: testMeasurement})
	_, page := get(t, New(b, nil, nil), "backend.example")
	txt := text(page)
	sum := sha256.Sum256(der)
	mustContain(t, txt,
		"Cantonal lab, Ed25519 key "+hex.EncodeToString(pub),
		"Uploads are kept for 10 days, today included.",
		"upload authorization is valid for 2 hours",
		"Reciprocal: a phone is matched",
		"One-sided (as GAEN phones match)",
		"up to 55 dB 100%", "56 to 63 dB 100%", "64 to 73 dB 50%", "above 73 dB 0%",
		"15 for contacts of order 1; 30 for contacts of order 2",
		"Detailed answers: whether it was exposed, and for every day",
		"within 10 metres and 300 seconds",
		"de-cwa: "+hex.EncodeToString(sum[:]),
		"auditor-1, Ed25519 key "+hex.EncodeToString(member.PublicKey()),
		"every 1 hour, a flush of 32 rows of 4096 bytes",
		"Every answer leaves on a grid of 100 milliseconds",
		"discrete Laplace mechanism, with ε = 0.5 per count and per day",
		"The policy names this contact for the operator: privacy@health.example.",
	)
	mustContain(t, page, `<a href="mailto:privacy@health.example">`)
	mustNotContain(t, txt, "None: the backend imports no GAEN key exports", "names no governance set")
}

func TestDefaultPolicyInWords(t *testing.T) {
	b := testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement})
	_, page := get(t, New(b, nil, nil), "backend.example")
	txt := text(page)
	mustContain(t, txt,
		"No health authority: nobody can declare a test positive",
		"Uploads are kept for 14 days",
		"Coarse answers: whether it was exposed, on which day most recently, and by which rules",
		"reach 15. Only contacts of confirmed cases are told.",
		"None: the backend imports no GAEN key exports.",
		"The policy names no governance set: the storage key goes only to this same build with this same policy.",
		"The policy releases no statistics.",
		"The policy names no contact for the operator.",
	)
	mustNotContain(t, txt, "One-sided (as GAEN phones match)")
}

func TestHostileNamesAreEscaped(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Default()
	p.Authorities = []policy.Authority{{Name: `<script>alert("lab")</script>`, PublicKey: pub}}
	p.GAENExportKeys = []policy.ExportKey{{Name: `"><img src=x onerror=alert(1)>`, PublicKey: exportKey(t)}}
	p.OperatorContact = `javascript:alert(1)//<b>call us</b>`
	b := testBundle(t, canonical(t, p), nil, teesim.Options{Measurement: testMeasurement})
	_, page := get(t, New(b, nil, nil), "backend.example")
	mustNotContain(t, page, "<script", "<img", "<b>", `href="javascript`)
	mustContain(t, page,
		"&lt;script&gt;alert(&#34;lab&#34;)&lt;/script&gt;",
		"&#34;&gt;&lt;img src=x onerror=alert(1)&gt;",
		"javascript:alert(1)//&lt;b&gt;call us&lt;/b&gt;",
	)
	// The policy document, shown as attested, is escaped too (the
	// bundle's canonical form already writes < and > as \u003c, \u003e).
	mustContain(t, page, `\u003cscript\u003e`)
}

func TestHostileHost(t *testing.T) {
	b := testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement})
	pg := New(b, nil, nil)
	for _, host := range []string{
		`evil.example;rm -rf ~`, `"><script>x</script>`, `a b`, `evil.example/`, `$(id)`, "",
	} {
		_, page := get(t, pg, host)
		txt := text(page)
		mustContain(t, txt, "./conftrace verify --server URL --tee sim", "put the backend's URL for URL")
		mustNotContain(t, page, "<script>x", "rm -rf", "$(id)")
	}
	_, page := get(t, pg, "127.0.0.1:8080")
	mustContain(t, text(page), "--server http://127.0.0.1:8080 ")
	mustNotContain(t, text(page), "put the backend's URL for URL")
}

func TestPageHeaders(t *testing.T) {
	b := testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement})
	resp, page := get(t, New(b, nil, nil), "backend.example")
	csp := resp.Header.Get("Content-Security-Policy")
	style := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(page)
	if style == nil {
		t.Fatal("no style element")
	}
	sum := sha256.Sum256([]byte(style[1]))
	if want := "style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, want) {
		t.Errorf("Content-Security-Policy %q does not pin the page's style sheet (%s)", csp, want)
	}
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %s", csp, want)
		}
	}
	if strings.Contains(page, "<script") {
		t.Error("the page holds a script")
	}
	for h, want := range map[string]string{
		"Content-Type": "text/html; charset=utf-8", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
}

func TestReleaseStatement(t *testing.T) {
	k1, err := release.GenerateKey("health-office")
	if err != nil {
		t.Fatal(err)
	}
	k2, err := release.GenerateKey("auditor")
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Default()
	p.Governance = []policy.GovernanceMember{{Name: k1.Name, PublicKey: k1.PublicKey()}}
	doc := canonical(t, p)
	sign := func(measurement []byte) []byte {
		st := release.Statement{Sequence: 4, TEE: attest.Sim, Measurements: [][]byte{measurement},
			PolicySHA256: sha256.Sum256(doc), Note: `conftrace v1.2 <b>commit 3f2a</b>`}
		f, err := release.Sign(st, k1)
		if err != nil {
			t.Fatal(err)
		}
		if f, err = release.Cosign(f, k2); err != nil {
			t.Fatal(err)
		}
		return f
	}
	b := testBundle(t, doc, sign(testMeasurement), teesim.Options{Measurement: testMeasurement})
	_, page := get(t, New(b, nil, nil), "backend.example")
	txt := text(page)
	mustContain(t, txt,
		"Sequence 4",
		"Admits sim code of the measurement "+hex.EncodeToString(testMeasurement),
		"health-office "+hex.EncodeToString(k1.PublicKey()),
		hex.EncodeToString(k2.PublicKey()),
		"This backend is admitted by it: its code and its policy",
		"(its note: conftrace v1.2 <b>commit 3f2a</b>)",
		"./conftrace verify --server https://backend.example --governance GOVERNANCE-FILE --allow-simulated",
	)
	mustNotContain(t, page, "<b>commit")
	mustContain(t, page, "conftrace v1.2 &lt;b&gt;commit 3f2a&lt;/b&gt;")

	b = testBundle(t, doc, sign(bytes.Repeat([]byte{1}, 32)), teesim.Options{Measurement: testMeasurement})
	_, page = get(t, New(b, nil, nil), "backend.example")
	mustContain(t, text(page), "This backend is not admitted by it: code not admitted by the statement: measurement "+hex.EncodeToString(testMeasurement))
}

func TestBuildCommandIsTheReadmes(t *testing.T) {
	// The page's build command is the README's release build, for the
	// platform and Go release of this binary; TestReproducibleBuild in
	// cmd/conftraced checks the README's.
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, []byte(releaseBuild)) {
		t.Fatalf("README.md does not give the release build %q", releaseBuild)
	}
	cmd := buildCommand()
	env, rest, ok := strings.Cut(cmd, " CGO_ENABLED=")
	if !ok || "CGO_ENABLED="+rest != releaseBuild {
		t.Fatalf("build command %q is not the release build with variables before it", cmd)
	}
	for _, f := range strings.Fields(env) {
		if !regexp.MustCompile(`^(GOOS|GOARCH|GOTOOLCHAIN)=[a-z0-9.]+$`).MatchString(f) {
			t.Errorf("build command sets %q", f)
		}
	}
	b := testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement})
	_, page := get(t, New(b, nil, nil), "backend.example")
	mustContain(t, page, `<pre class="command" id="build-command"><code>`+cmd+`</code></pre>`)
}

func TestPolicyUnreadable(t *testing.T) {
	// A bundle whose policy this build cannot read (another version's)
	// still renders, and says so, rather than failing the bundle.
	b := testBundle(t, []byte(`{"version":99}`), nil, teesim.Options{Measurement: testMeasurement})
	_, page := get(t, New(b, nil, nil), "backend.example")
	txt := text(page)
	mustContain(t, txt, "The policy could not be read: policy: invalid: version 99, want 1", `"version": 99`)
	mustNotContain(t, txt, "Who may declare a test positive")
}

func TestRenderedOncePerHost(t *testing.T) {
	b := testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement})
	pg := New(b, nil, nil)
	_, a := get(t, pg, "a.example")
	first := pg.last.Load()
	_, again := get(t, pg, "a.example")
	if pg.last.Load() != first || a != again {
		t.Error("the page was rendered again for the same Host")
	}
	_, other := get(t, pg, "b.example")
	if !strings.Contains(other, "https://b.example") || strings.Contains(other, "https://a.example") {
		t.Error("the page for another Host names the first one")
	}
}
