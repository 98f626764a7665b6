package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/snp"
	"github.com/conftrace/conftrace/attest/tdx"
)

func unixTime(t *testing.T, s string) func() time.Time {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return func() time.Time { return time.Unix(n, 0) }
}

// realTDXQuote returns the fields of the real TDX quote, read by attest/tdx.
func realTDXQuote(t *testing.T) *tdx.Quote {
	t.Helper()
	data, err := os.ReadFile(tdxFile)
	if err != nil {
		t.Fatal(err)
	}
	q, err := tdx.NewVerifier(tdx.VerifierOptions{Now: unixTime(t, tdxAt)}).VerifyQuote(t.Context(), attest.Evidence{TEE: attest.TDX, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// realSNPTCB returns the reported TCB of the real SNP evidence in file.
func realSNPTCB(t *testing.T, file string) snp.TCB {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	v, err := snp.NewVerifier(snp.VerifierOptions{Now: unixTime(t, snpAt)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := v.VerifyReport(t.Context(), attest.Evidence{TEE: attest.SNP, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	return r.TCB()
}

func TestVerifyEvidenceSNPMinTCB(t *testing.T) {
	file := snpEvidenceFile(t)
	tcb := realSNPTCB(t, file)
	arg := func(c snp.TCB) string {
		return fmt.Sprintf("%d,%d,%d,%d", c.Bootloader, c.TEE, c.SNP, c.Microcode)
	}
	run := func(minTCB string) error {
		_, _, err := cliRun(t, runVerify, "--evidence", file, "--tee", "snp", "--at", snpAt, "--min-tcb", minTCB)
		return err
	}
	if err := run(arg(tcb)); err != nil {
		t.Fatalf("--min-tcb equal to the report's TCB: %v", err)
	}
	if err := run("0,0,0,0"); err != nil {
		t.Fatalf("--min-tcb 0,0,0,0: %v", err)
	}
	higher := tcb
	higher.SNP++
	err := run(arg(higher))
	if !errors.Is(err, snp.ErrTCBTooLow) || !strings.Contains(err.Error(), fmt.Sprintf("snp %d < %d", tcb.SNP, higher.SNP)) {
		t.Fatalf("--min-tcb one SNP level above the report's: %v", err)
	}
}

func TestVerifyEvidenceTDXMinTCBAndRTMR(t *testing.T) {
	q := realTDXQuote(t)
	run := func(extra ...string) error {
		_, _, err := cliRun(t, runVerify, append([]string{"--evidence", tdxFile, "--tee", "tdx", "--at", tdxAt}, extra...)...)
		return err
	}
	if err := run("--min-tcb", hex.EncodeToString(q.TEETCBSVN)); err != nil {
		t.Fatalf("--min-tcb equal to the quote's: %v", err)
	}
	higher := [tdx.TEETCBSVNSize]byte(q.TEETCBSVN)
	higher[1]++
	if err := run("--min-tcb", hex.EncodeToString(higher[:])); !errors.Is(err, tdx.ErrTCBTooLow) || !strings.Contains(err.Error(), "byte 1 ") {
		t.Fatalf("--min-tcb one above the quote's in byte 1: %v", err)
	}

	rtmr := func(i int, b []byte) string { return fmt.Sprintf("%d=%x", i, b) }
	if err := run("--no-tcb", "--rtmr", rtmr(0, q.RTMRs[0]), "--rtmr", rtmr(2, q.RTMRs[2])); err != nil {
		t.Fatalf("--rtmr with the quote's values: %v", err)
	}
	wrong := append([]byte(nil), q.RTMRs[2]...)
	wrong[0] ^= 1
	if err := run("--no-tcb", "--rtmr", rtmr(0, q.RTMRs[0]), "--rtmr", rtmr(2, wrong)); !errors.Is(err, tdx.ErrMismatch) || !strings.Contains(err.Error(), "RTMR[2]") {
		t.Fatalf("--rtmr 2 with a wrong value: %v", err)
	}
}

func TestVerifyEvidenceTCBFlagUsage(t *testing.T) {
	q := realTDXQuote(t)
	snpFile := snpEvidenceFile(t)
	sgxQuote := sgxDir + "/quote_v3_ecdsa_p256_pck_chain.bin"
	good := fmt.Sprintf("1=%x", q.RTMRs[1])
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"min-tcb for sgx", []string{"--evidence", sgxQuote, "--tee", "sgx", "--min-tcb", "1,2,3,4"}, "tdx or snp only"},
		{"rtmr for snp", []string{"--evidence", snpFile, "--tee", "snp", "--rtmr", good}, "tdx only"},
		{"snp min-tcb of three", []string{"--evidence", snpFile, "--tee", "snp", "--min-tcb", "1,2,3"}, "bootloader,tee,snp,microcode"},
		{"snp min-tcb over 255", []string{"--evidence", snpFile, "--tee", "snp", "--min-tcb", "1,2,3,256"}, "0 to 255"},
		{"snp min-tcb in hex", []string{"--evidence", snpFile, "--tee", "snp", "--min-tcb", strings.Repeat("00", 16)}, "bootloader,tee,snp,microcode"},
		{"tdx min-tcb short", []string{"--evidence", tdxFile, "--tee", "tdx", "--min-tcb", "0300"}, "16 bytes"},
		{"tdx min-tcb as snp", []string{"--evidence", tdxFile, "--tee", "tdx", "--min-tcb", "1,2,3,4"}, "16 bytes"},
		{"rtmr index 4", []string{"--evidence", tdxFile, "--tee", "tdx", "--rtmr", fmt.Sprintf("4=%x", q.RTMRs[1])}, "INDEX 0 to 3"},
		{"rtmr no index", []string{"--evidence", tdxFile, "--tee", "tdx", "--rtmr", hex.EncodeToString(q.RTMRs[1])}, "INDEX=HEX"},
		{"rtmr short", []string{"--evidence", tdxFile, "--tee", "tdx", "--rtmr", "1=abcd"}, "48 bytes"},
		{"rtmr twice", []string{"--evidence", tdxFile, "--tee", "tdx", "--rtmr", good, "--rtmr", good}, "given twice"},
	} {
		if _, _, err := cliRun(t, runVerify, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
