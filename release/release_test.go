package release_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/release"
)

// members makes a governance set of a health authority and an auditor.
func members(t testing.TB) (*release.Governance, *release.Key, *release.Key) {
	t.Helper()
	ha, err := release.GenerateKey("health-authority")
	if err != nil {
		t.Fatal(err)
	}
	aud, err := release.GenerateKey("auditor")
	if err != nil {
		t.Fatal(err)
	}
	return &release.Governance{Members: []release.Member{ha.Member(), aud.Member()}}, ha, aud
}

var (
	policyHash = sha256.Sum256([]byte(`{"version":1}`))
	mrenclave  = bytes.Repeat([]byte{0xaa}, 32)
	mrsigner   = bytes.Repeat([]byte{0x51}, 32)
)

func sgxIdentity(measurement []byte, svn uint16) attest.Identity {
	return attest.Identity{TEE: attest.SGX, Measurement: measurement, Signer: mrsigner, ProductID: 1, SVN: svn}
}

// signed returns st's release file signed by each of keys.
func signed(t testing.TB, st release.Statement, keys ...*release.Key) []byte {
	t.Helper()
	f, err := release.Sign(st, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[1:] {
		if f, err = release.Cosign(f, k); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestAdmit(t *testing.T) {
	gov, ha, aud := members(t)
	byMeasurement := release.Statement{Sequence: 3, TEE: attest.SGX, Measurements: [][]byte{mrenclave}, PolicySHA256: policyHash, Note: "conftrace v1.2.0"}
	bySigner := release.Statement{Sequence: 4, TEE: attest.SGX, Signer: mrsigner, ProductID: 1, MinSVN: 2, PolicySHA256: policyHash}
	other := bytes.Repeat([]byte{0xbb}, 32)
	for _, tc := range []struct {
		name    string
		file    []byte
		id      attest.Identity
		policy  [32]byte
		min     uint64
		wantErr error
	}{
		{"measurement admitted", signed(t, byMeasurement, ha, aud), sgxIdentity(mrenclave, 0), policyHash, 3, nil},
		{"signer admitted, any enclave of it", signed(t, bySigner, aud, ha), sgxIdentity(other, 2), policyHash, 0, nil},
		{"signer admitted, later SVN", signed(t, bySigner, ha, aud), sgxIdentity(other, 9), policyHash, 4, nil},
		{"foreign build", signed(t, byMeasurement, ha, aud), sgxIdentity(other, 0), policyHash, 0, release.ErrCodeNotAdmitted},
		{"other TEE", signed(t, byMeasurement, ha, aud), attest.Identity{TEE: attest.Sim, Measurement: mrenclave}, policyHash, 0, release.ErrCodeNotAdmitted},
		{"other signer", signed(t, bySigner, ha, aud), attest.Identity{TEE: attest.SGX, Measurement: other, Signer: other, ProductID: 1, SVN: 2}, policyHash, 0, release.ErrCodeNotAdmitted},
		{"other product", signed(t, bySigner, ha, aud), attest.Identity{TEE: attest.SGX, Measurement: other, Signer: mrsigner, ProductID: 2, SVN: 2}, policyHash, 0, release.ErrCodeNotAdmitted},
		{"SVN too low", signed(t, bySigner, ha, aud), sgxIdentity(other, 1), policyHash, 0, release.ErrCodeNotAdmitted},
		{"unsigned policy change", signed(t, byMeasurement, ha, aud), sgxIdentity(mrenclave, 0), sha256.Sum256([]byte(`{"version":2}`)), 0, release.ErrPolicyNotAdmitted},
		{"rollback", signed(t, byMeasurement, ha, aud), sgxIdentity(mrenclave, 0), policyHash, 4, release.ErrRollback},
		{"auditor did not sign", signed(t, byMeasurement, ha), sgxIdentity(mrenclave, 0), policyHash, 0, release.ErrMissingSignature},
		{"no release", nil, sgxIdentity(mrenclave, 0), policyHash, 0, release.ErrNoRelease},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := gov.Admit(tc.file, tc.id, tc.policy, tc.min)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Admit: %v", err)
				}
				if want, _ := release.Parse(tc.file); st.Sequence != want.Statement.Sequence {
					t.Errorf("Admit returned sequence %d, want %d", st.Sequence, want.Statement.Sequence)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Admit: %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// A missing signature is reported by the member's name; signatures of
// people outside the set do not count, and do not hurt.
func TestVerifyNamesMissingMembers(t *testing.T) {
	gov, ha, aud := members(t)
	outsider, err := release.GenerateKey("outsider")
	if err != nil {
		t.Fatal(err)
	}
	st := release.Statement{Sequence: 1, TEE: attest.Sim, Measurements: [][]byte{mrenclave}, PolicySHA256: policyHash}
	_, err = gov.Verify(signed(t, st, ha, outsider))
	if !errors.Is(err, release.ErrMissingSignature) || !strings.Contains(err.Error(), "auditor") || strings.Contains(err.Error(), "health-authority") {
		t.Errorf("Verify without the auditor: %v, want a missing signature by auditor", err)
	}
	r, err := gov.Verify(signed(t, st, ha, outsider, aud))
	if err != nil {
		t.Fatalf("Verify with an outsider's signature too: %v", err)
	}
	if len(r.Signatures) != 3 {
		t.Errorf("%d signatures, want 3", len(r.Signatures))
	}
}

// Signing, cosigning in either order and cosigning twice give the same
// file: one statement, one encoding.
func TestCosignOrderDoesNotMatter(t *testing.T) {
	_, ha, aud := members(t)
	st := release.Statement{Sequence: 9, TEE: attest.TDX, Measurements: [][]byte{bytes.Repeat([]byte{2}, 48), bytes.Repeat([]byte{1}, 48)},
		RTMRs: [attest.RTMRCount][]byte{1: bytes.Repeat([]byte{3}, 48)}, PolicySHA256: policyHash}
	a := signed(t, st, ha, aud)
	b := signed(t, st, aud, ha, aud)
	if !bytes.Equal(a, b) {
		t.Fatalf("signing orders give different files:\n%s\n%s", a, b)
	}
	r, err := release.Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Marshal(), a) {
		t.Error("Marshal of a parsed file differs from the file")
	}
	if got := r.Statement.Measurements; !bytes.Equal(got[0], bytes.Repeat([]byte{1}, 48)) {
		t.Error("measurements are not in ascending order")
	}
}

// A changed statement no longer verifies under its signatures, and the
// file says whose.
func TestTamperedStatement(t *testing.T) {
	_, ha, _ := members(t)
	f := signed(t, release.Statement{Sequence: 1, TEE: attest.SGX, Measurements: [][]byte{mrenclave}, PolicySHA256: policyHash}, ha)
	changed := bytes.Replace(f, []byte("sequence 1\n"), []byte("sequence 2\n"), 1)
	if _, err := release.Parse(changed); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("Parse of a changed statement: %v, want a signature that does not verify", err)
	}
}

// On TDX, MRTD measures only the firmware: a statement that pins RTMRs
// admits only guests whose kernel, command line and initrd (conftraced and
// its policy) measured into them as it says.
func TestAdmitTDXRTMRs(t *testing.T) {
	gov, ha, aud := members(t)
	mrtd := bytes.Repeat([]byte{0x7d}, 48)
	kernel, initrd := bytes.Repeat([]byte{1}, 48), bytes.Repeat([]byte{2}, 48)
	st := release.Statement{Sequence: 5, TEE: attest.TDX, Measurements: [][]byte{mrtd}, RTMRs: [4][]byte{1: kernel, 2: initrd}, PolicySHA256: policyHash}
	f := signed(t, st, ha, aud)
	if !strings.Contains(string(f), fmt.Sprintf("tdx-rtmr 1 %x\ntdx-rtmr 2 %x\n", kernel, initrd)) {
		t.Fatalf("release file does not list the RTMRs in order:\n%s", f)
	}
	id := attest.Identity{TEE: attest.TDX, Measurement: mrtd, RTMRs: [4][]byte{bytes.Repeat([]byte{9}, 48), kernel, initrd, nil}}
	if _, err := gov.Admit(f, id, policyHash, 0); err != nil {
		t.Fatalf("a guest with the pinned RTMRs: %v", err)
	}
	id.RTMRs[2] = bytes.Repeat([]byte{3}, 48) // another initrd: another conftraced
	if _, err := gov.Admit(f, id, policyHash, 0); !errors.Is(err, release.ErrCodeNotAdmitted) {
		t.Fatalf("a guest with another RTMR 2: %v, want %v", err, release.ErrCodeNotAdmitted)
	}
	for _, bad := range []string{
		strings.Replace(string(f), "tdx-rtmr 1 ", "tdx-rtmr 4 ", 1),
		strings.Replace(string(f), fmt.Sprintf("tdx-rtmr 1 %x\ntdx-rtmr 2 %x\n", kernel, initrd), fmt.Sprintf("tdx-rtmr 2 %x\ntdx-rtmr 1 %x\n", initrd, kernel), 1),
		strings.Replace(string(f), "tdx-rtmr 2 ", "tdx-rtmr 1 ", 1),
		strings.Replace(string(f), "tdx-rtmr 1 ", "tdx-rtmr 01 ", 1),
	} {
		if _, err := release.Parse([]byte(bad)); err == nil {
			t.Errorf("Parse accepted\n%s", bad)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	_, ha, aud := members(t)
	good := signed(t, release.Statement{Sequence: 12, TEE: attest.SGX, Signer: mrsigner, ProductID: 1, MinSVN: 3, PolicySHA256: policyHash, Note: "v1"}, ha, aud)
	if _, err := release.Parse(good); err != nil {
		t.Fatal(err)
	}
	sigLines := func() []string {
		var s []string
		for _, l := range strings.SplitAfter(string(good), "\n") {
			if strings.HasPrefix(l, "signature ") {
				s = append(s, l)
			}
		}
		return s
	}()
	body := strings.Join(strings.SplitAfter(string(good), "\n")[:7], "")
	for _, tc := range []struct{ name, file string }{
		{"empty", ""},
		{"no final line feed", strings.TrimSuffix(string(good), "\n")},
		{"CRLF", strings.ReplaceAll(string(good), "\n", "\r\n")},
		{"empty line", strings.Replace(string(good), "tee sgx\n", "tee sgx\n\n", 1)},
		{"other version", strings.Replace(string(good), "release v1", "release v2", 1)},
		{"uppercase hex", strings.Replace(string(good), fmt.Sprintf("%x", policyHash), fmt.Sprintf("%X", policyHash), 1)},
		{"leading zero", strings.Replace(string(good), "sequence 12", "sequence 012", 1)},
		{"plus sign", strings.Replace(string(good), "sequence 12", "sequence +12", 1)},
		{"sequence 0", strings.Replace(string(good), "sequence 12", "sequence 0", 1)},
		{"unknown field", strings.Replace(string(good), "note v1\n", "note v1\ncolour red\n", 1)},
		{"fields out of order", strings.Replace(string(good), "sequence 12\ntee sgx\n", "tee sgx\nsequence 12\n", 1)},
		{"no signature", body},
		{"signatures out of order", body + sigLines[1] + sigLines[0]},
		{"signature twice", body + sigLines[0] + sigLines[0]},
		{"truncated signature", body + sigLines[0][:len(sigLines[0])-3] + "\n"},
		{"product id too large", strings.Replace(string(good), "sgx-product-id 1", "sgx-product-id 65536", 1)},
		{"trailing space", strings.Replace(string(good), "note v1", "note v1 ", 1)},
		{"tab", strings.Replace(string(good), "note v1", "note\tv1", 1)},
		{"too large", string(good) + strings.Repeat("x", release.MaxFileSize)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := release.Parse([]byte(tc.file)); err == nil {
				t.Fatalf("Parse succeeded: %+v", r.Statement)
			}
		})
	}
}

func TestStatementValidate(t *testing.T) {
	m32, m48 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{1}, 48)
	for _, tc := range []struct {
		name string
		st   release.Statement
	}{
		{"no sequence", release.Statement{TEE: attest.SGX, Measurements: [][]byte{m32}}},
		{"unknown TEE", release.Statement{Sequence: 1, TEE: "sev", Measurements: [][]byte{m48}}},
		{"no code", release.Statement{Sequence: 1, TEE: attest.SGX}},
		{"both forms", release.Statement{Sequence: 1, TEE: attest.SGX, Measurements: [][]byte{m32}, Signer: m32}},
		{"signer outside SGX", release.Statement{Sequence: 1, TEE: attest.TDX, Signer: m32}},
		{"short signer", release.Statement{Sequence: 1, TEE: attest.SGX, Signer: m32[:31]}},
		{"TDX measurement of 32 bytes", release.Statement{Sequence: 1, TEE: attest.TDX, Measurements: [][]byte{m32}}},
		{"duplicate measurement", release.Statement{Sequence: 1, TEE: attest.SGX, Measurements: [][]byte{m32, m32}}},
		{"note with a line feed", release.Statement{Sequence: 1, TEE: attest.SGX, Measurements: [][]byte{m32}, Note: "a\nsequence 9"}},
		{"long note", release.Statement{Sequence: 1, TEE: attest.SGX, Measurements: [][]byte{m32}, Note: strings.Repeat("n", 201)}},
		{"RTMR outside TDX", release.Statement{Sequence: 1, TEE: attest.SNP, Measurements: [][]byte{m48}, RTMRs: [4][]byte{1: m48}}},
		{"short RTMR", release.Statement{Sequence: 1, TEE: attest.TDX, Measurements: [][]byte{m48}, RTMRs: [4][]byte{1: m48, 2: m32}}},
		{"TDX without RTMR 1", release.Statement{Sequence: 1, TEE: attest.TDX, Measurements: [][]byte{m48}, RTMRs: [4][]byte{0: m48, 2: m48}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.st.Marshal(); err == nil {
				t.Fatal("Marshal succeeded")
			}
		})
	}
}

func TestGovernanceFile(t *testing.T) {
	gov, _, _ := members(t)
	f, err := gov.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := release.ParseGovernance(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Members) != 2 || got.Members[0].Name != "health-authority" || !got.Members[1].PublicKey.Equal(gov.Members[1].PublicKey) {
		t.Errorf("ParseGovernance = %+v, want %+v", got, gov)
	}
	line := gov.Members[0].Line()
	for _, tc := range []struct{ name, file string }{
		{"no members", "conftrace governance v1\n"},
		{"other version", strings.Replace(string(f), "v1", "v2", 1)},
		{"member twice", string(f) + line},
		{"same key, other name", string(f) + strings.Replace(line, "health-authority", "ha2", 1)},
		{"name with a space", strings.Replace(string(f), "auditor", "the auditor", 1)},
		{"uppercase key", strings.Replace(string(f), line, strings.ToUpper(line[:len(line)-1])+"\n", 1)},
		{"short key", strings.Replace(string(f), line, line[:len(line)-3]+"\n", 1)},
		{"not a member line", string(f) + "threshold 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if g, err := release.ParseGovernance([]byte(tc.file)); err == nil {
				t.Fatalf("ParseGovernance succeeded: %+v", g)
			}
		})
	}
}

func TestKeyPEM(t *testing.T) {
	k, err := release.GenerateKey("auditor")
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	got, err := release.ParseKey(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "auditor" || !got.PublicKey().Equal(k.PublicKey()) {
		t.Errorf("ParseKey = %s %x, want auditor %x", got.Name, got.PublicKey(), k.PublicKey())
	}
	if _, err := release.GenerateKey("two words"); err == nil {
		t.Error("GenerateKey accepted a name with a space")
	}
	if _, err := release.ParseKey(bytes.Replace(b, []byte("Governance-Member: auditor"), []byte("Governance-Member: a b"), 1)); err == nil {
		t.Error("ParseKey accepted a key whose name cannot be a member's")
	}
}
