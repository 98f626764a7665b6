package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// verifyExit runs "conftrace verify args" as the binary would and returns
// its exit status, standard output and standard error.
func verifyExit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(t.Context(), cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, append([]string{"verify"}, args...))
	return code, out.String(), errb.String()
}

// The real SGX quote without collateral: its identity is printed, but the
// platform's TCB was not judged, so verify fails unless --no-tcb says that
// is what the auditor wants.
func TestVerifyEvidenceSGXWithoutCollateral(t *testing.T) {
	quote := filepath.Join(sgxDir, "quote_v3_ecdsa_p256_pck_chain.bin")
	const mrenclave = "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f"
	code, out, stderr := verifyExit(t, "--evidence", quote, "--tee", "sgx", "--at", sgxAt)
	if code != 1 || !strings.Contains(stderr, "not judged") || !strings.Contains(out, mrenclave) {
		t.Errorf("without collateral: exit %d, stdout %q, stderr %q; want 1, the identity, and \"not judged\"", code, out, stderr)
	}
	code, out, stderr = verifyExit(t, "--evidence", quote, "--tee", "sgx", "--at", sgxAt, "--no-tcb")
	if code != 0 || !strings.Contains(out, mrenclave) || !strings.Contains(out, "NOT JUDGED") {
		t.Errorf("--no-tcb: exit %d, stdout %q, stderr %q; want 0 and the identity with its TCB marked not judged", code, out, stderr)
	}
}

// With its collateral the real quote's platform is SWHardeningNeeded
// (INTEL-SA-00615, INTEL-SA-00657): refused, naming the status, unless
// --tcb-status lists it.
func TestVerifyEvidenceSGXStatus(t *testing.T) {
	quote := filepath.Join(sgxDir, "quote_v3_ecdsa_p256_pck_chain.bin")
	base := []string{"--evidence", quote, "--tee", "sgx", "--at", sgxAt, "--collateral", sgxDir}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }

	code, _, stderr := verifyExit(t, base...)
	if code != 1 || !strings.Contains(stderr, "SWHardeningNeeded") {
		t.Errorf("default: exit %d, stderr %q; want 1 naming SWHardeningNeeded", code, stderr)
	}
	code, _, stderr = verifyExit(t, with("--tcb-status", "ConfigurationNeeded,OutOfDate")...)
	if code != 1 || !strings.Contains(stderr, "SWHardeningNeeded") {
		t.Errorf("other statuses listed: exit %d, stderr %q; want 1 naming SWHardeningNeeded", code, stderr)
	}
	code, out, stderr := verifyExit(t, with("--tcb-status", "ConfigurationNeeded,SWHardeningNeeded")...)
	if code != 0 || !strings.Contains(out, "SWHardeningNeeded") || !strings.Contains(out, "INTEL-SA-00615, INTEL-SA-00657") {
		t.Errorf("status listed: exit %d, stdout %q, stderr %q; want 0 with the status and its advisories", code, out, stderr)
	}
	v := verifyJSON(t, with("--tcb-status", "SWHardeningNeeded")...)
	if v.TCBStatus != "SWHardeningNeeded" || strings.Join(v.TCBAdvisoryIDs, " ") != "INTEL-SA-00615 INTEL-SA-00657" {
		t.Errorf("--json: status %q advisories %q", v.TCBStatus, v.TCBAdvisoryIDs)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{with("--tcb-status", "SWHardening"), "unknown TCB status"},
		{with("--tcb-status", "UpToDate,,SWHardeningNeeded"), "empty"},
		{with("--tcb-status", "Revoked"), "never acceptable"},
		{with("--no-tcb"), "--no-tcb"},
	} {
		if code, _, stderr := verifyExit(t, tc.args...); code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want usage error %q", tc.args[len(base):], code, stderr, tc.want)
		}
	}
}

// TDX and SNP evidence carry no collateral: their TCB is judged only
// against a minimum, without which verify fails unless --no-tcb is given.
func TestVerifyEvidenceTDXAndSNPNotJudged(t *testing.T) {
	q := realTDXQuote(t)
	snpFile := snpEvidenceFile(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"tdx", []string{"--evidence", tdxFile, "--tee", "tdx", "--at", tdxAt}},
		{"snp", []string{"--evidence", snpFile, "--tee", "snp", "--at", snpAt}},
	} {
		if code, _, stderr := verifyExit(t, tc.args...); code != 1 || !strings.Contains(stderr, "not judged") {
			t.Errorf("%s without --min-tcb: exit %d, stderr %q; want 1 and \"not judged\"", tc.name, code, stderr)
		}
		if code, _, stderr := verifyExit(t, append(tc.args, "--no-tcb")...); code != 0 {
			t.Errorf("%s --no-tcb: exit %d, stderr %q", tc.name, code, stderr)
		}
	}
	if code, _, stderr := verifyExit(t, "--evidence", tdxFile, "--tee", "tdx", "--at", tdxAt, "--min-tcb", hex.EncodeToString(q.TEETCBSVN)); code != 0 {
		t.Errorf("tdx with its own TCB as minimum: exit %d, stderr %q", code, stderr)
	}
	tcb := realSNPTCB(t, snpFile)
	minTCB := fmt.Sprintf("%d,%d,%d,%d", tcb.Bootloader, tcb.TEE, tcb.SNP, tcb.Microcode)
	if code, _, stderr := verifyExit(t, "--evidence", snpFile, "--tee", "snp", "--at", snpAt, "--min-tcb", minTCB); code != 0 {
		t.Errorf("snp with its own TCB as minimum: exit %d, stderr %q", code, stderr)
	}
}

// verify --evidence pins MRCONFIGID (TDX), HOST_DATA and VMPL (SNP).
func TestVerifyEvidencePins(t *testing.T) {
	q := realTDXQuote(t)
	snpFile := snpEvidenceFile(t)
	tdxArgs := []string{"--evidence", tdxFile, "--tee", "tdx", "--at", tdxAt, "--no-tcb"}
	snpArgs := []string{"--evidence", snpFile, "--tee", "snp", "--at", snpAt, "--no-tcb"}
	s := verifyJSON(t, snpArgs...)
	other := func(h string) string {
		b, _ := hex.DecodeString(h)
		b[0] ^= 1
		return hex.EncodeToString(b)
	}
	for _, tc := range []struct {
		args []string
		want string // "" means accepted
	}{
		{append(tdxArgs, "--mrconfigid", hex.EncodeToString(q.MRConfigID)), ""},
		{append(tdxArgs, "--mrconfigid", other(hex.EncodeToString(q.MRConfigID))), "mrconfigid mismatch"},
		{append(snpArgs, "--host-data", s.HostData), ""},
		{append(snpArgs, "--host-data", other(s.HostData)), "host_data mismatch"},
		{append(snpArgs, "--vmpl", fmt.Sprint(*s.VMPL)), ""},
		{append(snpArgs, "--vmpl", fmt.Sprint((*s.VMPL+1)%4)), "vmpl mismatch"},
	} {
		code, _, stderr := verifyExit(t, tc.args...)
		if tc.want == "" && code != 0 || tc.want != "" && (code != 1 || !strings.Contains(stderr, tc.want)) {
			t.Errorf("%q: exit %d, stderr %q; want %q", tc.args[len(tdxArgs):], code, stderr, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(snpArgs, "--mrconfigid", hex.EncodeToString(q.MRConfigID)), "tdx only"},
		{append(tdxArgs, "--host-data", s.HostData), "snp only"},
		{append(tdxArgs, "--vmpl", "0"), "snp only"},
		{append(snpArgs, "--vmpl", "4"), "0 to 3"},
		{append(snpArgs, "--host-data", "abcd"), "32 bytes"},
	} {
		if code, _, stderr := verifyExit(t, tc.args...); code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want usage error %q", tc.args[len(tdxArgs):], code, stderr, tc.want)
		}
	}
}

// verify --server applies every flag it takes: pins and minimums the
// backend cannot meet refuse it, and flags that only make sense offline
// are usage errors. The test backend runs in the simulated TEE, which has
// no RTMRs, platform TCB or SGX status.
func TestVerifyServerAppliesEveryFlag(t *testing.T) {
	b := newTestBackend(t)
	base := []string{"--server", b.url, "--allow-simulated"}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	rtmr := "0=" + strings.Repeat("ab", 48)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{with("--rtmr", rtmr), "rtmr"},
		{with("--mrconfigid", strings.Repeat("ab", 48)), "mrconfigid"},
		{with("--host-data", strings.Repeat("ab", 32)), "host_data"},
		{with("--vmpl", "0"), "vmpl"},
		{with("--min-tcb", "1,2,3,4"), "--min-tcb"},
		{with("--min-tcb", strings.Repeat("00", 16)), "--min-tcb"},
		{with("--tcb-status", "SWHardeningNeeded"), "--tcb-status"},
		{with("--tee", "sgx"), "tee mismatch"},
	} {
		if code, out, stderr := verifyExit(t, tc.args...); code != 1 || !strings.Contains(stderr, tc.want) || out != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 1 naming %q and nothing printed", tc.args[len(base):], code, out, stderr, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{with("--collateral", sgxDir), "--collateral"},
		{with("--at", sgxAt), "--at"},
	} {
		if code, _, stderr := verifyExit(t, tc.args...); code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want usage error naming %q", tc.args[len(base):], code, stderr, tc.want)
		}
	}
	// Flags the simulated backend meets are applied and pass.
	if code, _, stderr := verifyExit(t, with("--tee", "sim", "--forbid-debug", "--measurement", b.measurement())...); code != 0 {
		t.Errorf("--tee sim --forbid-debug: exit %d, stderr %q", code, stderr)
	}
}
