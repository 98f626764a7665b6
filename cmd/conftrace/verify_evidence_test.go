package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/uuid"

	"github.com/conftrace/conftrace/attest"
)

// The real evidence the verifier packages ship as test data, with the Unix
// times at which their certificates and collateral are valid.
const (
	sgxDir  = "../../attest/sgx/testdata"
	sgxAt   = "1671497404" // 2022-12-20
	tdxFile = "../../attest/tdx/testdata/tdx_prod_quote_SPR_E4.dat"
	tdxAt   = "1688173200" // 2023-07-01
	snpDir  = "../../attest/snp/testdata"
	snpAt   = "1685577600" // 2023-06-01
)

func verifyJSON(t *testing.T, args ...string) verifiedJSON {
	t.Helper()
	out := mustRun(t, runVerify, append(args, "--json")...)
	var v verifiedJSON
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	return v
}

// snpEvidenceFile writes the real SNP report followed by a certificate
// table holding its VCEK: the evidence format of attest/snp.
func snpEvidenceFile(t *testing.T) string {
	t.Helper()
	report, err := os.ReadFile(filepath.Join(snpDir, "attestation.bin"))
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := os.ReadFile(filepath.Join(snpDir, "vcek.testcer"))
	if err != nil {
		t.Fatal(err)
	}
	table := (&abi.CertTable{Entries: []abi.CertTableEntry{{GUID: uuid.MustParse(abi.VcekGUID), RawCert: vcek}}}).Marshal()
	p := filepath.Join(t.TempDir(), "snp.bin")
	if err := os.WriteFile(p, append(report, table...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerifyEvidenceSGX(t *testing.T) {
	quote := filepath.Join(sgxDir, "quote_v3_ecdsa_p256_pck_chain.bin")
	v := verifyJSON(t, "--evidence", quote, "--tee", "sgx", "--at", sgxAt, "--collateral", sgxDir, "--tcb-status", "SWHardeningNeeded")
	if v.TEE != attest.SGX ||
		v.Measurement != "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f" ||
		v.Signer != "9affcfae47b848ec2caf1c49b4b283531e1cc425f93582b36806e52a43d78d1a" ||
		v.Debug || v.TCBStatus != "SWHardeningNeeded" || !strings.HasPrefix(v.ReportData, "026a69ced96c3e02") {
		t.Fatalf("identity %+v", v)
	}
	// Without collateral the TCB is not judged, which --no-tcb accepts.
	if v := verifyJSON(t, "--evidence", quote, "--tee", "sgx", "--at", sgxAt, "--no-tcb"); v.TCBStatus != "" || v.TCBJudged == nil || *v.TCBJudged {
		t.Fatalf("TCB status %q, judged %v without collateral", v.TCBStatus, v.TCBJudged)
	}
	// A pinned measurement that matches passes; one that does not fails.
	mustRun(t, runVerify, "--evidence", quote, "--tee", "sgx", "--at", sgxAt, "--no-tcb", "--measurement", v.Measurement)
	if _, _, err := cliRun(t, runVerify, "--evidence", quote, "--tee", "sgx", "--at", sgxAt, "--no-tcb", "--measurement", strings.Repeat("00", 32)); err == nil || !strings.Contains(err.Error(), "measurement mismatch") {
		t.Fatalf("wrong measurement: %v", err)
	}

	data, _ := os.ReadFile(quote)
	flipped := filepath.Join(t.TempDir(), "flipped.bin")
	data[48+320] ^= 1 // inside the report body's report data
	os.WriteFile(flipped, data, 0o644)
	if _, _, err := cliRun(t, runVerify, "--evidence", flipped, "--tee", "sgx", "--at", sgxAt); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("flipped byte: %v", err)
	}
	// Years later, the collateral is stale and the quote is refused.
	if _, _, err := cliRun(t, runVerify, "--evidence", quote, "--tee", "sgx", "--at", "1900000000", "--collateral", sgxDir); err == nil {
		t.Fatal("verified with collateral long past its next update")
	}
	// The evidence is not TDX evidence.
	if _, _, err := cliRun(t, runVerify, "--evidence", quote, "--tee", "tdx", "--at", sgxAt); err == nil {
		t.Fatal("an SGX quote verified as TDX evidence")
	}
}

func TestVerifyEvidenceTDXAndSNP(t *testing.T) {
	v := verifyJSON(t, "--evidence", tdxFile, "--tee", "tdx", "--at", tdxAt, "--no-tcb")
	if v.TEE != attest.TDX || len(v.Measurement) != 96 || v.Debug || len(v.RTMRs) != 4 || len(v.MRConfigID) != 96 || len(v.PlatformTCB) != 32 {
		t.Fatalf("TDX identity %+v", v)
	}
	snpFile := snpEvidenceFile(t)
	s := verifyJSON(t, "--evidence", snpFile, "--tee", "snp", "--at", snpAt, "--no-tcb")
	// The real report go-sev-guest ships comes from a debug guest.
	if s.TEE != attest.SNP || len(s.Measurement) != 96 || !s.Debug || len(s.HostData) != 64 || s.VMPL == nil || len(s.PlatformTCB) != 8 {
		t.Fatalf("SNP identity %+v", s)
	}
	_, _, err := cliRun(t, runVerify, "--evidence", snpFile, "--tee", "snp", "--at", snpAt, "--no-tcb", "--forbid-debug")
	var me *attest.MismatchError
	if !errors.As(err, &me) || me.Field != "debug" {
		t.Fatalf("--forbid-debug on a debug guest: %v", err)
	}
}

func TestVerifyEvidenceUsage(t *testing.T) {
	quote := filepath.Join(sgxDir, "quote_v3_ecdsa_p256_pck_chain.bin")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no tee", []string{"--evidence", quote}, "want sgx, tdx or snp"},
		{"both sources", []string{"--evidence", quote, "--server", "http://127.0.0.1:1"}, "exclude each other"},
		{"collateral for tdx", []string{"--evidence", tdxFile, "--tee", "tdx", "--collateral", sgxDir}, "sgx only"},
		{"missing file", []string{"--evidence", "nope.bin", "--tee", "sgx"}, "reading evidence"},
		{"empty collateral dir", []string{"--evidence", quote, "--tee", "sgx", "--collateral", t.TempDir()}, "want exactly one"},
		{"sim refused", []string{"--evidence", quote, "--tee", "sim"}, "simulated"},
	} {
		if _, _, err := cliRun(t, runVerify, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
