package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
	"github.com/conftrace/conftrace/release"
)

// switchable is one address in front of whichever backend a test runs
// behind it, as a deployment's address outlives its builds.
type switchable struct {
	URL    string
	mu     sync.Mutex
	target *url.URL
}

func newSwitchable(t *testing.T, target string) *switchable {
	t.Helper()
	s := &switchable{}
	s.set(t, target)
	srv := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		s.mu.Lock()
		pr.SetURL(s.target)
		s.mu.Unlock()
	}})
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *switchable) set(t *testing.T, target string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.target = u
	s.mu.Unlock()
}

// build is a backend of the given measurement and policy (nil: the
// default), whose policy lists lab, started with release file rel (nil:
// none).
func build(t *testing.T, lab *authority.Key, measurement []byte, pol *policy.Policy, rel []byte) *localbackend.Backend {
	t.Helper()
	p := policy.Default()
	if pol != nil {
		p = *pol
	}
	p.AnswerReleaseMillis = 0
	b, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir(), Authority: lab, Measurement: measurement, Policy: &p, Release: rel})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// policyFile writes pol (nil: the default) as a build started by build(lab)
// enforces it, and returns its path.
func policyFile(t *testing.T, dir string, lab *authority.Key, pol *policy.Policy) string {
	t.Helper()
	p := policy.Default()
	if pol != nil {
		p = *pol
	}
	p.AnswerReleaseMillis = 0
	p.Authorities = []policy.Authority{{Name: lab.Name, PublicKey: lab.PublicKey()}}
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policy-"+hex.EncodeToString(sha256Of(doc)[:4])+".json")
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func sha256Of(b []byte) []byte { h := sha256.Sum256(b); return h[:] }

func newLab(t *testing.T) *authority.Key {
	t.Helper()
	lab, err := authority.GenerateKey("lab")
	if err != nil {
		t.Fatal(err)
	}
	return lab
}

func readConfig(t *testing.T, state string) device.Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg device.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// device init without a pin trusts on first use: it pins the measurement
// and the policy it sees, says so, and refuses other code or another
// policy at the same address after.
func TestDeviceInitPinsFirstSeen(t *testing.T) {
	lab := newLab(t)
	first := sha256Of([]byte("the build seen first"))
	front := newSwitchable(t, build(t, lab, first, nil, nil).URL)
	state := filepath.Join(t.TempDir(), "phone")
	out := mustRun(t, runDeviceInit, "--state", state, "--server", front.URL, "--allow-simulated")
	if !strings.Contains(out, "pinned on first use: measurement "+hex.EncodeToString(first)) {
		t.Errorf("device init does not say what it pinned:\n%s", out)
	}
	cfg := readConfig(t, state)
	if len(cfg.Measurements) != 1 || cfg.Measurements[0] != hex.EncodeToString(first) || cfg.PolicySHA256 == "" {
		t.Fatalf("the device pinned measurements %v and policy %q, want %x and the policy's hash", cfg.Measurements, cfg.PolicySHA256, first)
	}
	if out := mustRun(t, runDeviceCheckExposure, "--state", state); out != "not exposed\n" {
		t.Fatalf("check-exposure against the pinned backend printed %q", out)
	}

	// Other code at the address.
	front.set(t, build(t, lab, sha256Of([]byte("another build")), nil, nil).URL)
	_, _, err := cliRun(t, runDeviceCheckExposure, "--state", state)
	var me *attest.MismatchError
	if !errors.As(err, &me) || me.Field != "measurement" {
		t.Errorf("check-exposure against another build: %v, want a measurement mismatch", err)
	}
	// The same code under another policy.
	longer := policy.Default()
	longer.RetentionDays = 30
	front.set(t, build(t, lab, first, &longer, nil).URL)
	if _, _, err := cliRun(t, runDeviceCheckExposure, "--state", state); !errors.Is(err, client.ErrPolicyNotPinned) {
		t.Errorf("check-exposure against the pinned build under another policy: %v, want %v", err, client.ErrPolicyNotPinned)
	}

	// --measurement pins those measurements, and the policy seen.
	given := filepath.Join(t.TempDir(), "given")
	out = mustRun(t, runDeviceInit, "--state", given, "--server", front.URL, "--allow-simulated", "--measurement", hex.EncodeToString(first))
	if cfg := readConfig(t, given); len(cfg.Measurements) != 1 || cfg.PolicySHA256 == "" || !strings.Contains(out, "pinned the measurements given") {
		t.Errorf("device init --measurement pinned %v and policy %q, and said:\n%s", cfg.Measurements, cfg.PolicySHA256, out)
	}

	// A state that pins nothing (made before devices pinned) pins what it
	// sees at its next use, and says so.
	legacy := filepath.Join(t.TempDir(), "legacy")
	if _, err := device.Create(t.Context(), legacy, device.Config{Server: front.URL, AllowSimulated: true}); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := cliRun(t, runDeviceCheckExposure, "--state", legacy)
	if err != nil || !strings.Contains(stderr, "trusts on first use") {
		t.Fatalf("the first use of a state that pins nothing: %v, stderr %q", err, stderr)
	}
	if cfg := readConfig(t, legacy); len(cfg.Measurements) != 1 || cfg.PolicySHA256 == "" {
		t.Errorf("a state that pinned nothing pinned %v and %q at its first use", cfg.Measurements, cfg.PolicySHA256)
	}
}

// --any-measurement accepts any code, and says so on every use.
func TestDeviceInitAnyMeasurement(t *testing.T) {
	lab := newLab(t)
	front := newSwitchable(t, build(t, lab, sha256Of([]byte("one build")), nil, nil).URL)
	state := filepath.Join(t.TempDir(), "dev")
	_, stderr, err := cliRun(t, runDeviceInit, "--state", state, "--server", front.URL, "--allow-simulated", "--any-measurement")
	if err != nil || !strings.Contains(stderr, "WARNING: this device accepts any code") {
		t.Fatalf("device init --any-measurement: %v, stderr %q; want a warning", err, stderr)
	}
	if cfg := readConfig(t, state); !cfg.AnyCode || len(cfg.Measurements) > 0 || cfg.PolicySHA256 != "" {
		t.Errorf("device init --any-measurement saved %+v", cfg)
	}
	front.set(t, build(t, lab, sha256Of([]byte("another build")), nil, nil).URL)
	for range 2 {
		_, stderr, err := cliRun(t, runDeviceCheckExposure, "--state", state)
		if err != nil || !strings.Contains(stderr, "WARNING: this device accepts any code") {
			t.Errorf("check-exposure of a device that accepts any code: %v, stderr %q; want success and a warning", err, stderr)
		}
	}
}

func TestDeviceInitPinErrors(t *testing.T) {
	b := newTestBackend(t)
	dir := t.TempDir()
	gov := filepath.Join(dir, "governance.txt")
	os.WriteFile(gov, []byte("conftrace governance v1\n"), 0o644)
	for _, tc := range []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"measurement and any", []string{"--measurement", b.measurement(), "--any-measurement"}, "do not go together", true},
		{"governance and measurement", []string{"--measurement", b.measurement(), "--governance", gov}, "do not go together", true},
		{"no governance file", []string{"--governance", filepath.Join(dir, "none")}, "--governance", false},
		{"empty governance set", []string{"--governance", gov}, "members", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cliRun(t, runDeviceInit, append([]string{"--state", filepath.Join(dir, tc.name), "--server", b.url, "--allow-simulated"}, tc.args...)...)
			checkErr(t, err, tc.want, tc.usage)
		})
	}
}

// The governance workflow through the commands: two members make keys and
// sign each release; a phone pins their set once and follows an upgrade
// (new build, new policy) without re-pinning, and refuses a rollback and a
// statement that one member did not sign.
func TestGovernanceThroughCommands(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	lab := newLab(t)
	var members []string
	for _, m := range []string{"health-authority", "auditor"} {
		out := mustRun(t, runReleaseKeygen, "--name", m, "--out", p(m+".key"))
		if !strings.HasPrefix(out, "member "+m+" ") {
			t.Fatalf("release keygen printed %q, want the member's governance line", out)
		}
		members = append(members, out)
	}
	if err := os.WriteFile(p("governance.txt"), []byte("conftrace governance v1\n"+strings.Join(members, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	sign := func(name string, seq int, measurement []byte, policyPath string, signers ...string) []byte {
		t.Helper()
		mustRun(t, runReleaseSign, "--key", p(signers[0]+".key"), "--out", p(name), "--sequence", string(rune('0'+seq)),
			"--tee", "sim", "--measurement", hex.EncodeToString(measurement), "--policy", policyPath, "--note", name)
		for _, s := range signers[1:] {
			if out := mustRun(t, runReleaseSign, "--key", p(s+".key"), "--in", p(name), "--out", p(name)); !strings.Contains(out, "signed as "+s) {
				t.Errorf("release sign --in printed %q", out)
			}
		}
		b, err := os.ReadFile(p(name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// Release 1, and a phone that pins the governance set.
	m1, pol1 := sha256Of([]byte("release 1")), policyFile(t, dir, lab, nil)
	rel1 := sign("release-1", 1, m1, pol1, "health-authority", "auditor")
	out := mustRun(t, runReleaseVerify, "--governance", p("governance.txt"), "--release", p("release-1"), "--policy", pol1)
	if !strings.Contains(out, "sequence 1\n") || !strings.Contains(out, "signed by every member of the governance set: health-authority and auditor") {
		t.Errorf("release verify printed:\n%s", out)
	}
	front := newSwitchable(t, build(t, lab, m1, nil, rel1).URL)
	state := p("phone")
	out = mustRun(t, runDeviceInit, "--state", state, "--server", front.URL, "--allow-simulated", "--governance", p("governance.txt"))
	if !strings.Contains(out, "accepted release statement 1") {
		t.Errorf("device init --governance printed:\n%s", out)
	}
	if out := mustRun(t, runDeviceCheckExposure, "--state", state); out != "not exposed\n" {
		t.Fatalf("check-exposure under release 1 printed %q", out)
	}

	// Release 2: another build and another policy, signed by both.
	shorter := policy.Default()
	shorter.RetentionDays = 10
	m2, pol2 := sha256Of([]byte("release 2")), policyFile(t, dir, lab, &shorter)
	rel2 := sign("release-2", 2, m2, pol2, "auditor", "health-authority")
	v2 := build(t, lab, m2, &shorter, rel2)
	front.set(t, v2.URL)
	if out := mustRun(t, runDeviceCheckExposure, "--state", state); out != "not exposed\n" {
		t.Fatalf("check-exposure after the upgrade printed %q", out)
	}
	if cfg := readConfig(t, state); cfg.ReleaseSequence != 2 || len(cfg.Measurements) != 0 {
		t.Errorf("after the upgrade the device remembers release %d and pins measurements %v; want 2 and none", cfg.ReleaseSequence, cfg.Measurements)
	}

	// Back to release 1: a rollback.
	front.set(t, build(t, lab, m1, nil, rel1).URL)
	if _, _, err := cliRun(t, runDeviceCheckExposure, "--state", state); !errors.Is(err, release.ErrRollback) {
		t.Errorf("check-exposure after a rollback to release 1: %v, want %v", err, release.ErrRollback)
	}

	// Release 3 that only the health authority signed.
	rel3 := sign("release-3", 3, m2, pol2, "health-authority")
	_, _, err := cliRun(t, runReleaseVerify, "--governance", p("governance.txt"), "--release", p("release-3"))
	if !errors.Is(err, release.ErrMissingSignature) || !strings.Contains(err.Error(), "auditor") {
		t.Errorf("release verify of a statement the auditor did not sign: %v", err)
	}
	front.set(t, build(t, lab, m2, &shorter, rel3).URL)
	if _, _, err := cliRun(t, runDeviceCheckExposure, "--state", state); !errors.Is(err, release.ErrMissingSignature) {
		t.Errorf("check-exposure under a statement one member did not sign: %v, want %v", err, release.ErrMissingSignature)
	}
	// And the statement names its policy: verify --policy says so.
	if _, _, err := cliRun(t, runReleaseVerify, "--governance", p("governance.txt"), "--release", p("release-2"), "--policy", pol1); !errors.Is(err, release.ErrPolicyNotAdmitted) {
		t.Errorf("release verify with another policy: %v, want %v", err, release.ErrPolicyNotAdmitted)
	}

	// An auditor sees the release a running backend claims, and judges
	// it against the governance set.
	out = mustRun(t, runVerify, "--server", v2.URL, "--allow-simulated")
	for _, want := range []string{"bundle valid", "release                sequence 2, 2 signatures, signers NOT CHECKED", "release note           release-2"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify --server printed no %q:\n%s", want, out)
		}
	}
	out = mustRun(t, runVerify, "--server", v2.URL, "--allow-simulated", "--governance", p("governance.txt"), "--min-sequence", "2", "--json")
	var got struct {
		IssuedAt time.Time `json:"issued_at"`
		NotAfter time.Time `json:"not_after"`
		Release  struct {
			Sequence uint64 `json:"sequence"`
			Admitted bool   `json:"admitted"`
		} `json:"release"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Release.Sequence != 2 || !got.Release.Admitted || !got.NotAfter.After(got.IssuedAt) {
		t.Errorf("verify --governance --json printed %s (%v)", out, err)
	}
	if _, _, err := cliRun(t, runVerify, "--server", v2.URL, "--allow-simulated", "--governance", p("governance.txt"), "--min-sequence", "3"); !errors.Is(err, release.ErrRollback) {
		t.Errorf("verify --min-sequence above the backend's release: %v, want %v", err, release.ErrRollback)
	}
	_, _, err = cliRun(t, runVerify, "--server", v2.URL, "--allow-simulated", "--min-sequence", "3")
	checkErr(t, err, "--min-sequence goes with --governance", true)
}

func TestReleaseCommandErrors(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	lab := newLab(t)
	pol := policyFile(t, dir, lab, nil)
	mustRun(t, runReleaseKeygen, "--name", "auditor", "--out", p("auditor.key"))
	m := hex.EncodeToString(sha256Of([]byte("a build")))
	stmt := []string{"--key", p("auditor.key"), "--sequence", "1", "--tee", "sgx", "--policy", pol}
	mustRun(t, runReleaseSign, append(stmt, "--out", p("signed"), "--measurement", m)...)
	for _, tc := range []struct {
		name  string
		fn    cmdFunc
		args  []string
		want  string
		usage bool
	}{
		{"keygen no name", runReleaseKeygen, []string{"--out", p("x.key")}, "--name is required", true},
		{"keygen no out", runReleaseKeygen, []string{"--name", "x"}, "--out is required", true},
		{"keygen bad name", runReleaseKeygen, []string{"--name", "two words", "--out", p("y.key")}, "member name", true},
		{"keygen existing key", runReleaseKeygen, []string{"--name", "auditor", "--out", p("auditor.key")}, "exists", false},
		{"sign no key", runReleaseSign, []string{"--out", p("a"), "--in", p("signed")}, "--key is required", true},
		{"sign no out", runReleaseSign, []string{"--key", p("auditor.key"), "--in", p("signed")}, "--out is required", true},
		{"sign in and statement", runReleaseSign, append(stmt, "--out", p("b"), "--in", p("signed"), "--measurement", m), "--in adds a signature", true},
		{"sign no policy", runReleaseSign, []string{"--key", p("auditor.key"), "--out", p("c"), "--sequence", "1", "--tee", "sgx", "--measurement", m}, "--policy is required", true},
		{"sign no code", runReleaseSign, append(stmt, "--out", p("d")), "must admit code", true},
		{"sign both forms", runReleaseSign, append(stmt, "--out", p("e"), "--measurement", m, "--sgx-mrsigner", m), "not both", true},
		{"sign signer outside sgx", runReleaseSign, []string{"--key", p("auditor.key"), "--out", p("f"), "--sequence", "1", "--tee", "tdx", "--sgx-mrsigner", m, "--policy", pol}, "SGX enclaves only", true},
		{"sign product id without signer", runReleaseSign, append(stmt, "--out", p("g"), "--measurement", m, "--sgx-product-id", "1"), "go with --sgx-mrsigner", true},
		{"sign sequence 0", runReleaseSign, []string{"--key", p("auditor.key"), "--out", p("h"), "--tee", "sgx", "--measurement", m, "--policy", pol}, "sequence number 0", true},
		{"sign over an existing file", runReleaseSign, append(stmt, "--out", p("signed"), "--measurement", m), "exists", false},
		{"sign a tampered file", runReleaseSign, []string{"--key", p("auditor.key"), "--out", p("i"), "--in", pol}, "release", false},
		{"verify no governance", runReleaseVerify, []string{"--release", p("signed")}, "--governance is required", true},
		{"verify no release", runReleaseVerify, []string{"--governance", p("signed")}, "--release is required", true},
		{"sign RTMR outside tdx", runReleaseSign, append(stmt, "--out", p("j"), "--measurement", m, "--tdx-rtmr", "1="+strings.Repeat("ab", 48)), "TDX guests only", true},
		{"sign RTMR index 4", runReleaseSign, append(stmt, "--out", p("k"), "--measurement", m, "--tdx-rtmr", "4="+strings.Repeat("ab", 48)), "INDEX 0 to 3", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cliRun(t, tc.fn, tc.args...)
			checkErr(t, err, tc.want, tc.usage)
		})
	}
	// The signer form, as an SGX release whose enclave signing key the
	// members hold.
	out := mustRun(t, runReleaseSign, "--key", p("auditor.key"), "--out", p("signer"), "--sequence", "4", "--tee", "sgx",
		"--sgx-mrsigner", m, "--sgx-product-id", "1", "--sgx-min-svn", "3", "--policy", pol)
	if !strings.Contains(out, "sgx-mrsigner "+m+"\nsgx-product-id 1\nsgx-min-svn 3\n") {
		t.Errorf("release sign printed:\n%s", out)
	}
	// A TDX release pins the RTMRs that measure the kernel and the initrd.
	mrtd, r1, r2 := strings.Repeat("7d", 48), strings.Repeat("01", 48), strings.Repeat("02", 48)
	out = mustRun(t, runReleaseSign, "--key", p("auditor.key"), "--out", p("tdx"), "--sequence", "5", "--tee", "tdx",
		"--measurement", mrtd, "--tdx-rtmr", "2="+r2, "--tdx-rtmr", "1="+r1, "--policy", pol)
	if !strings.Contains(out, "measurement "+mrtd+"\ntdx-rtmr 1 "+r1+"\ntdx-rtmr 2 "+r2+"\n") {
		t.Errorf("release sign printed:\n%s", out)
	}
}
