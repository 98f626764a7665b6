package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/policy"
)

func TestPolicyInit(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	mustRun(t, runAuthorityKeygen, "--out", p("lab.key"))
	mustRun(t, runAuthorityKeygen, "--out", p("clinic.key"))
	// A public key without the name header, as openssl writes it.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	os.WriteFile(p("plain.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)

	out := mustRun(t, runPolicyInit, "--authority", "lab="+p("lab.key.pub"), "--authority", "clinic="+p("clinic.key.pub"),
		"--authority", "hospital="+p("plain.pub"), "--out", p("policy.json"), "--retention-days", "21")
	doc, err := os.ReadFile(p("policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := policy.Parse(doc)
	if err != nil {
		t.Fatalf("policy init wrote a policy that policy.Parse refuses: %v", err)
	}
	want := policy.Default()
	want.RetentionDays = 21
	for _, name := range []string{"lab", "clinic"} {
		b, _ := os.ReadFile(p(name + ".key.pub"))
		_, pk, _ := authority.ParsePublicKeyPEM(b)
		want.Authorities = append(want.Authorities, policy.Authority{Name: name, PublicKey: pk})
	}
	want.Authorities = append(want.Authorities, policy.Authority{Name: "hospital", PublicKey: pub})
	gotC, _ := got.Canonical()
	wantC, _ := want.Canonical()
	if string(gotC) != string(wantC) {
		t.Errorf("policy = %s\nwant %s", gotC, wantC)
	}
	if !strings.Contains(out, fmt.Sprintf("policy sha256 %x", sha256.Sum256(wantC))) {
		t.Errorf("policy init printed %q, want the SHA-256 of the canonical policy", out)
	}
	if !strings.Contains(string(doc), "\n  ") {
		t.Error("policy file is not indented for people to read")
	}

	// An existing file is replaced only with --force.
	args := []string{"--authority", "lab=" + p("lab.key.pub"), "--out", p("policy.json")}
	_, _, err = cliRun(t, runPolicyInit, args...)
	checkErr(t, err, "use --force", false)
	if now, _ := os.ReadFile(p("policy.json")); string(now) != string(doc) {
		t.Error("policy init without --force changed the existing file")
	}
	mustRun(t, runPolicyInit, append(args, "--force")...)
	doc, _ = os.ReadFile(p("policy.json"))
	if got, err := policy.Parse(doc); err != nil || len(got.Authorities) != 1 || got.RetentionDays != 14 {
		t.Errorf("--force: policy %+v, %v; want lab only with 14 days", got, err)
	}
}

func TestPolicyInitErrors(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	mustRun(t, runAuthorityKeygen, "--out", p("lab.key"))
	os.WriteFile(p("junk.pub"), []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o644)
	out := p("policy.json")
	lab := "lab=" + p("lab.key.pub")
	tests := []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"no out", []string{"--authority", lab}, "--out is required", true},
		{"no authority", []string{"--out", out}, "at least one --authority", true},
		{"no equals", []string{"--authority", p("lab.key.pub"), "--out", out}, "want NAME=FILE", true},
		{"empty name", []string{"--authority", "=" + p("lab.key.pub"), "--out", out}, "want NAME=FILE", true},
		{"empty file", []string{"--authority", "lab=", "--out", out}, "want NAME=FILE", true},
		{"name differs from key", []string{"--authority", "clinic=" + p("lab.key.pub"), "--out", out}, `is the key of authority "lab"`, false},
		{"unreadable key", []string{"--authority", "lab=" + p("none.pub"), "--out", out}, "no such file", false},
		{"private key given", []string{"--authority", "lab=" + p("lab.key"), "--out", out}, "no PEM PUBLIC KEY block", false},
		{"not a key", []string{"--authority", "lab=" + p("junk.pub"), "--out", out}, "authority: public key", false},
		{"listed twice", []string{"--authority", lab, "--authority", lab, "--out", out}, "listed twice", true},
		{"retention zero", []string{"--authority", lab, "--out", out, "--retention-days", "0"}, "retention_days 0 outside 1..60", true},
		{"retention too long", []string{"--authority", lab, "--out", out, "--retention-days", "61"}, "retention_days 61 outside 1..60", true},
		{"retention not a number", []string{"--authority", lab, "--out", out, "--retention-days", "two"}, "invalid value", true},
		{"no directory", []string{"--authority", lab, "--out", p("none/policy.json")}, "no such file", false},
		{"unknown matching rule", []string{"--authority", lab, "--out", out, "--matching", "bluetooth"}, `unknown rule "bluetooth"`, true},
		{"rule twice", []string{"--authority", lab, "--out", out, "--matching", "reciprocal,reciprocal"}, "listed twice", true},
		{"no rule", []string{"--authority", lab, "--out", out, "--matching", ""}, "no rule", true},
		{"export key missing", []string{"--authority", lab, "--out", out, "--gaen-export-key", "de=" + p("none.pem")}, "no such file", false},
		{"export key not PEM", []string{"--authority", lab, "--out", out, "--gaen-export-key", "de=" + p("lab.key.pub")}, "want an ECDSA P-256 key", true},
		{"export key no equals", []string{"--authority", lab, "--out", out, "--gaen-export-key", p("lab.key.pub")}, "want NAME=FILE", true},
		{"sgx status no equals", []string{"--authority", lab, "--out", out, "--sgx-accept", "SWHardeningNeeded"}, "want STATUS=ADVISORY", true},
		{"sgx out of date", []string{"--authority", lab, "--out", out, "--sgx-accept", "OutOfDate=INTEL-SA-00615"}, "cannot be accepted by an attested policy", true},
		{"sgx unknown status", []string{"--authority", lab, "--out", out, "--sgx-accept", "Fine=INTEL-SA-00615"}, "unknown SGX TCB status", true},
		{"sgx bad advisory", []string{"--authority", lab, "--out", out, "--sgx-accept", "SWHardeningNeeded=CVE-2024-1"}, "want INTEL-SA- and five digits", true},
		{"tdx short", []string{"--authority", lab, "--out", out, "--tdx-min-tcb", "0300"}, "tdx_min_tcb", true},
		{"snp three parts", []string{"--authority", lab, "--out", out, "--snp-min-tcb", "3,0,8"}, "--snp-min-tcb", true},
		{"snp too large", []string{"--authority", lab, "--out", out, "--snp-min-tcb", "3,0,8,256"}, "--snp-min-tcb", true},
		{"certificates too long", []string{"--authority", lab, "--out", out, "--certificate-days", "400"}, "valid_days 400", true},
		{"contact with a newline", []string{"--authority", lab, "--out", out, "--operator-contact", "a\nb"}, "operator_contact", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := cliRun(t, runPolicyInit, tt.args...)
			checkErr(t, err, tt.want, tt.usage)
			if stdout != "" {
				t.Errorf("printed %q despite the error", stdout)
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("a policy file was written despite the error")
			}
		})
	}
}

// policy init writes the exposure certificates' rule and the operator's
// contact the transparency page shows, and leaves both out unless asked.
func TestPolicyInitCertificatesAndContact(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	mustRun(t, runAuthorityKeygen, "--out", p("lab.key"))
	lab := "lab=" + p("lab.key.pub")
	read := func(name string) policy.Policy {
		t.Helper()
		doc, err := os.ReadFile(p(name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := policy.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	mustRun(t, runPolicyInit, "--authority", lab, "--out", p("plain.json"))
	if got := read("plain.json"); got.Certificates != (policy.Certificates{}) || got.OperatorContact != "" {
		t.Errorf("without the flags: certificates %+v, contact %q; want both left out", got.Certificates, got.OperatorContact)
	}
	mustRun(t, runPolicyInit, "--authority", lab, "--out", p("set.json"), "--certificate-single-use", "--operator-contact", "privacy@health.example")
	got := read("set.json")
	if want := (policy.Certificates{SingleUse: true, ValidDays: got.RetentionDays}); got.Certificates != want || got.OperatorContact != "privacy@health.example" {
		t.Errorf("certificates %+v, contact %q; want %+v and the contact given", got.Certificates, got.OperatorContact, want)
	}
	mustRun(t, runPolicyInit, "--authority", lab, "--out", p("days.json"), "--certificate-days", "3")
	if got := read("days.json"); got.Certificates != (policy.Certificates{ValidDays: 3}) {
		t.Errorf("--certificate-days 3: %+v", got.Certificates)
	}
}

// policy init writes the platforms phones accept: further SGX statuses
// with their advisories, and the TDX and SNP minimums without which phones
// refuse those TEEs.
func TestPolicyInitTCB(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	mustRun(t, runAuthorityKeygen, "--out", p("lab.key"))
	out := mustRun(t, runPolicyInit, "--authority", "lab="+p("lab.key.pub"), "--out", p("policy.json"),
		"--sgx-accept", "SWHardeningNeeded=INTEL-SA-00615,INTEL-SA-00657", "--sgx-accept", "ConfigurationNeeded=",
		"--tdx-min-tcb", "03000500000000000000000000000000", "--snp-min-tcb", "3,0,8,115")
	doc, err := os.ReadFile(p("policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := policy.Parse(doc)
	if err != nil {
		t.Fatalf("policy init wrote a policy that policy.Parse refuses: %v", err)
	}
	want := policy.TCB{
		SGXAccepted: []policy.SGXAccepted{
			{Status: "SWHardeningNeeded", Advisories: []string{"INTEL-SA-00615", "INTEL-SA-00657"}},
			{Status: "ConfigurationNeeded", Advisories: []string{}},
		},
		TDXMinTCB: "03000500000000000000000000000000",
		SNPMinTCB: &policy.SNPTCB{Bootloader: 3, TEE: 0, SNP: 8, Microcode: 115},
	}
	if fmt.Sprint(got.TCB.SGXAccepted) != fmt.Sprint(want.SGXAccepted) || got.TCB.TDXMinTCB != want.TDXMinTCB ||
		got.TCB.SNPMinTCB == nil || *got.TCB.SNPMinTCB != *want.SNPMinTCB {
		t.Errorf("tcb = %+v, want %+v", got.TCB, want)
	}
	if !strings.Contains(out, "SGX SWHardeningNeeded with 2 advisories") || !strings.Contains(out, "SNP from 3,0,8,115") {
		t.Errorf("policy init printed %q, want the platforms accepted", out)
	}
}

// policy init lists the matching rules and the GAEN key servers whose
// exports the backend imports.
func TestPolicyInitGAEN(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	mustRun(t, runAuthorityKeygen, "--out", p("lab.key"))
	exportKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&exportKey.PublicKey)
	os.WriteFile(p("de.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	out := mustRun(t, runPolicyInit, "--authority", "lab="+p("lab.key.pub"), "--out", p("policy.json"),
		"--matching", "reciprocal,one_sided", "--gaen-export-key", "de-cwa="+p("de.pem"))
	doc, _ := os.ReadFile(p("policy.json"))
	got, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Reciprocal() || !got.OneSided() || len(got.GAENExportKeys) != 1 || got.GAENExportKeys[0].Name != "de-cwa" || !bytes.Equal(got.GAENExportKeys[0].PublicKey, der) {
		t.Errorf("policy %+v: want both rules and the de-cwa export key", got)
	}
	if !strings.Contains(out, "matching reciprocal,one_sided; 1 GAEN export keys") {
		t.Errorf("policy init printed %q", out)
	}
	// The default: reciprocal only, no export keys.
	mustRun(t, runPolicyInit, "--authority", "lab="+p("lab.key.pub"), "--out", p("default.json"))
	doc, _ = os.ReadFile(p("default.json"))
	if got, _ := policy.Parse(doc); !got.Reciprocal() || got.OneSided() || len(got.GAENExportKeys) != 0 {
		t.Errorf("default policy %+v: want reciprocal only and no export keys", got)
	}
}
