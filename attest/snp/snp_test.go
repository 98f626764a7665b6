package snp

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/uuid"
)

// realTime is inside the validity of the real VCEK (2022-09-24 to 2029-09-24)
// and of AMD's Milan roots.
var realTime = time.Date(2023, time.June, 1, 0, 0, 0, 0, time.UTC)

// realMeasurement is the launch measurement of testdata/attestation.bin.
const realMeasurement = "b07af9620f3b839b47996422ddec60583389" +
	"51d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustGUID(s string) uuid.UUID { return uuid.MustParse(s) }

// realEvidence is the real report from go-sev-guest with its VCEK in a
// certificate table, as a Milan guest's configfs-tsm would return them.
func realEvidence(t *testing.T) attest.Evidence {
	t.Helper()
	report := readFile(t, "testdata/attestation.bin")
	table := marshalCertTable([]certEntry{{guid: mustGUID(abi.VcekGUID), data: readFile(t, "testdata/vcek.testcer")}})
	ev, err := NewEvidence(report, table)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func realVerifier(t *testing.T) *Verifier {
	t.Helper()
	v, err := NewVerifier(VerifierOptions{Now: at(realTime)})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyRealReport(t *testing.T) {
	ev := realEvidence(t)
	r, err := realVerifier(t).VerifyReport(context.Background(), ev)
	if err != nil {
		t.Fatalf("VerifyReport: %v", err)
	}
	if got := hex.EncodeToString(r.Measurement); got != realMeasurement {
		t.Errorf("measurement %s, want %s", got, realMeasurement)
	}
	var want attest.ReportData
	copy(want[:], []byte{1, 2, 3, 4, 5})
	if r.ReportData != want {
		t.Errorf("report data %x, want %x", r.ReportData, want)
	}
	if r.SigningKey != "VCEK" {
		t.Errorf("signing key %q, want VCEK", r.SigningKey)
	}
	// The VM that produced this report was launched with a debug policy.
	if !r.Debug() {
		t.Errorf("Debug() = false for policy %#x, which has the DEBUG bit", r.Policy)
	}

	id, err := realVerifier(t).Verify(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if id.TEE != attest.SNP || !id.Debug || !bytes.Equal(id.Measurement, r.Measurement) || id.ReportData != want {
		t.Errorf("identity %+v does not match report", id)
	}
	if id.Signer != nil {
		t.Errorf("identity signer %x for a VM without an ID block", id.Signer)
	}
	if id.TCBStatus != "" {
		t.Errorf("TCBStatus %q, want empty: no collateral judged", id.TCBStatus)
	}

	// Through attest.Verify: refused by default because of the debug policy,
	// accepted when debug is allowed and the measurement is the expected one.
	m, _ := hex.DecodeString(realMeasurement)
	_, err = attest.Verify(context.Background(), ev, want, attest.Expectations{Measurements: [][]byte{m}}, realVerifier(t))
	var mm *attest.MismatchError
	if !errors.As(err, &mm) || mm.Field != "debug" {
		t.Errorf("attest.Verify with default expectations: %v, want a debug mismatch", err)
	}
	// Allowing debug, the TCB must still be judged: against a minimum.
	exp := attest.Expectations{Measurements: [][]byte{m}, AllowDebug: true}
	if _, err := attest.Verify(context.Background(), ev, want, exp, realVerifier(t)); !errors.Is(err, attest.ErrTCBNotJudged) {
		t.Errorf("attest.Verify allowing debug, without a minimum TCB: %v, want ErrTCBNotJudged", err)
	}
	exp.MinSNPTCB = id.PlatformTCB
	if _, err := attest.Verify(context.Background(), ev, want, exp, realVerifier(t)); err != nil {
		t.Errorf("attest.Verify allowing debug: %v", err)
	}
}

// Real evidence must also verify when the certificate table carries the ASK
// and ARK (as hosts usually provision them), which are ignored.
func TestVerifyRealReportWithChainInTable(t *testing.T) {
	block, rest := pem.Decode(productLines()["Milan"][0])
	ask := block.Bytes
	block, _ = pem.Decode(rest)
	ark := block.Bytes
	table := marshalCertTable([]certEntry{
		{guid: mustGUID(abi.ArkGUID), data: ark},
		{guid: mustGUID(abi.AskGUID), data: ask},
		{guid: mustGUID(abi.VcekGUID), data: readFile(t, "testdata/vcek.testcer")},
	})
	ev, err := NewEvidence(readFile(t, "testdata/attestation.bin"), table)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := realVerifier(t).Verify(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRealReportFailures(t *testing.T) {
	good := realEvidence(t)
	flip := func(off int) attest.Evidence {
		d := bytes.Clone(good.Data)
		d[off] ^= 0x01
		return attest.Evidence{TEE: attest.SNP, Data: d}
	}
	vcekOnly := func(t *testing.T, vcek []byte) attest.Evidence {
		table := marshalCertTable([]certEntry{{guid: mustGUID(abi.VcekGUID), data: vcek}})
		return attest.Evidence{TEE: attest.SNP, Data: append(bytes.Clone(good.Data[:ReportSize]), table...)}
	}
	vcek := readFile(t, "testdata/vcek.testcer")
	badVcekSig := bytes.Clone(vcek)
	badVcekSig[len(badVcekSig)-10] ^= 0x01

	fake := newFakeAMD(t)
	untrusted, err := NewVerifier(VerifierOptions{Now: at(realTime), Roots: fake.roots()})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		v    *Verifier
		ev   attest.Evidence
		want error
	}{
		{"flipped report data", realVerifier(t), flip(0x50), ErrVerification},
		{"flipped measurement", realVerifier(t), flip(0x90), ErrVerification},
		{"flipped signature", realVerifier(t), flip(0x2A0), ErrVerification},
		{"VCEK signature broken", realVerifier(t), vcekOnly(t, badVcekSig), ErrVerification},
		{"no certificates", realVerifier(t), attest.Evidence{TEE: attest.SNP, Data: good.Data[:ReportSize]}, ErrMissingCertificate},
		{"only some other certificate", realVerifier(t), attest.Evidence{TEE: attest.SNP, Data: append(bytes.Clone(good.Data[:ReportSize]),
			marshalCertTable([]certEntry{{guid: mustGUID(abi.ArkGUID), data: []byte("x")}})...)}, ErrMissingCertificate},
		{"untrusted root", untrusted, good, ErrVerification},
		{"expired", mustVerifier(t, VerifierOptions{Now: at(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))}), good, ErrVerification},
		{"not yet valid", mustVerifier(t, VerifierOptions{Now: at(time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC))}), good, ErrVerification},
		{"truncated report", realVerifier(t), attest.Evidence{TEE: attest.SNP, Data: good.Data[:ReportSize-1]}, ErrMalformed},
		{"wrong TEE", realVerifier(t), attest.Evidence{TEE: attest.TDX, Data: good.Data}, ErrMalformed},
		{"collateral", realVerifier(t), attest.Evidence{TEE: attest.SNP, Data: good.Data, Collateral: []byte{1}}, ErrMalformed},
		{"table without terminator", realVerifier(t), attest.Evidence{TEE: attest.SNP, Data: good.Data[:len(good.Data)-len(vcek)-certTableEntrySize]}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.v.Verify(context.Background(), tt.ev)
			if !errors.Is(err, tt.want) {
				t.Errorf("Verify: %v, want %v", err, tt.want)
			}
		})
	}
}

func mustVerifier(t *testing.T, opts VerifierOptions) *Verifier {
	t.Helper()
	v, err := NewVerifier(opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := realVerifier(t).Verify(ctx, realEvidence(t)); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with canceled context: %v", err)
	}
}

func TestZeroVerifierUsesAMDRoots(t *testing.T) {
	// The zero Verifier verifies at the current time; the real VCEK is
	// valid until 2029, after which this test only checks the error kind.
	var v Verifier
	_, err := v.Verify(context.Background(), realEvidence(t))
	if time.Now().Before(time.Date(2029, 9, 1, 0, 0, 0, 0, time.UTC)) {
		if err != nil {
			t.Fatal(err)
		}
	} else if !errors.Is(err, ErrVerification) {
		t.Fatal(err)
	}
	// A fake AMD is not trusted by the zero Verifier.
	fake := newFakeAMD(t)
	if _, err := v.Verify(context.Background(), fake.evidence(t, attest.ReportData{}, false)); !errors.Is(err, ErrVerification) {
		t.Errorf("zero Verifier accepted evidence signed by a fake AMD: %v", err)
	}
}

func TestNewVerifierBadRoots(t *testing.T) {
	for name, roots := range map[string]map[string][][]byte{
		"garbage":  {"Milan": {[]byte("not pem")}},
		"only ask": {"Milan": {productLines()["Milan"][0][:bytes.Index(productLines()["Milan"][0], []byte("-----END"))+25]}},
	} {
		if _, err := NewVerifier(VerifierOptions{Roots: roots}); err == nil {
			t.Errorf("%s: NewVerifier accepted bad roots", name)
		}
	}
}

func TestNewEvidence(t *testing.T) {
	report := readFile(t, "testdata/attestation.bin")
	if _, err := NewEvidence(report[:100], nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("short report: %v", err)
	}
	if _, err := NewEvidence(report, []byte{1, 2, 3}); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad table: %v", err)
	}
	ev, err := NewEvidence(report, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev.TEE != attest.SNP || !bytes.Equal(ev.Data, report) {
		t.Errorf("NewEvidence(report, nil) = %v", ev)
	}
}

// fakeAMD is go-sev-guest's test-only AMD: an ARK, ASK and VCEK made from
// keys that ship with the library, so it can sign reports of our choosing.
type fakeAMD struct {
	signer *sevtest.AmdSigner
}

func newFakeAMD(t *testing.T) *fakeAMD {
	t.Helper()
	s, err := sevtest.DefaultTestOnlyCertChain("Milan-B0", realTime.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &fakeAMD{signer: s}
}

// roots returns the fake AMD's ASK and ARK in KDS cert_chain form.
func (f *fakeAMD) roots() map[string][][]byte {
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.signer.Ask.Raw})
	chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.signer.Ark.Raw})...)
	return map[string][][]byte{"Milan": {chain}}
}

// evidence returns evidence for a report with reportData, signed by the
// fake VCEK, from a guest whose policy has DEBUG set if debug.
func (f *fakeAMD) evidence(t *testing.T, reportData attest.ReportData, debug bool) attest.Evidence {
	t.Helper()
	measurement := bytes.Repeat([]byte{0xAB}, 48)
	r := &spb.Report{
		Version:         2,
		GuestSvn:        7,
		Policy:          abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true, Debug: debug}),
		SignatureAlgo:   abi.SignEcdsaP384Sha384,
		FamilyId:        make([]byte, 16),
		ImageId:         make([]byte, 16),
		ReportData:      reportData[:],
		Measurement:     measurement,
		HostData:        make([]byte, 32),
		IdKeyDigest:     make([]byte, 48),
		AuthorKeyDigest: make([]byte, 48),
		ReportId:        make([]byte, 32),
		ReportIdMa:      make([]byte, 32),
		ChipId:          make([]byte, 64),
		Signature:       make([]byte, 512),
	}
	raw, err := abi.ReportToAbiBytes(r)
	if err != nil {
		t.Fatal(err)
	}
	rr, ss, err := f.signer.Sign(abi.SignedComponent(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(rr, ss, raw); err != nil {
		t.Fatal(err)
	}
	table, err := f.signer.CertTableBytes()
	if err != nil {
		t.Fatal(err)
	}
	ev, err := NewEvidence(raw, table)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestVerifyFakeAMD(t *testing.T) {
	fake := newFakeAMD(t)
	v, err := NewVerifier(VerifierOptions{Now: at(realTime), Roots: fake.roots()})
	if err != nil {
		t.Fatal(err)
	}
	var rd attest.ReportData
	copy(rd[:], "conftrace fake AMD round trip")
	for _, debug := range []bool{false, true} {
		ev := fake.evidence(t, rd, debug)
		id, err := v.Verify(context.Background(), ev)
		if err != nil {
			t.Fatalf("debug=%v: %v", debug, err)
		}
		if id.Debug != debug {
			t.Errorf("identity Debug = %v, want %v", id.Debug, debug)
		}
		if id.ReportData != rd || id.SVN != 7 || !bytes.Equal(id.Measurement, bytes.Repeat([]byte{0xAB}, 48)) {
			t.Errorf("identity %+v does not carry the report's fields", id)
		}
		_, err = attest.Verify(context.Background(), ev, rd, attest.Expectations{MinSNPTCB: id.PlatformTCB}, v)
		if debug && err == nil {
			t.Error("attest.Verify accepted a debug guest by default")
		}
		if !debug && err != nil {
			t.Errorf("attest.Verify refused a non-debug guest: %v", err)
		}
	}
}

func TestIdentitySVNSaturates(t *testing.T) {
	r := &Report{GuestSVN: 70000, Measurement: make([]byte, 48), IDKeyDigest: append(make([]byte, 47), 1)}
	id := r.Identity()
	if id.SVN != 65535 {
		t.Errorf("SVN %d, want 65535 for guest SVN 70000", id.SVN)
	}
	if !bytes.Equal(id.Signer, r.IDKeyDigest) {
		t.Errorf("Signer %x, want the ID key digest %x", id.Signer, r.IDKeyDigest)
	}
}

func TestDefaultRootsCoverVCEKAndVLEK(t *testing.T) {
	roots, err := parseRoots(productLines())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"Milan", "Genoa", "Turin"} {
		sets := roots[line]
		if len(sets) != 1 {
			t.Errorf("%s: %d root sets, want 1 (one ARK)", line, len(sets))
			continue
		}
		pc := sets[0].ProductCerts
		if pc.Ark.Subject.CommonName != "ARK-"+line || pc.Ask == nil || pc.Asvk == nil {
			t.Errorf("%s: ARK %q, ASK %v, ASVK %v", line, pc.Ark.Subject.CommonName, pc.Ask != nil, pc.Asvk != nil)
		}
	}
}
