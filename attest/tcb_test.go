package attest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// The zero Expectations accept only a platform whose TCB was judged good:
// SGX evidence without a status (no collateral) and TDX or SNP evidence
// without a minimum to compare with are refused, unless AllowUnjudgedTCB
// says so. Simulated evidence has no platform to judge.
func TestCheckRefusesUnjudgedTCB(t *testing.T) {
	for _, id := range []Identity{
		{TEE: SGX, Measurement: []byte{1}},
		{TEE: TDX, Measurement: []byte{1}, PlatformTCB: make([]byte, 16)},
		{TEE: SNP, Measurement: []byte{1}, PlatformTCB: make([]byte, 4)},
	} {
		if err := (Expectations{}).Check(id); !errors.Is(err, ErrTCBNotJudged) {
			t.Errorf("zero expectations, %s evidence without a judged TCB: %v, want ErrTCBNotJudged", id.TEE, err)
		}
		if err := (Expectations{AllowUnjudgedTCB: true}).Check(id); err != nil {
			t.Errorf("AllowUnjudgedTCB, %s evidence: %v", id.TEE, err)
		}
	}
	if err := (Expectations{AllowSimulated: true}).Check(Identity{TEE: Sim}); err != nil {
		t.Errorf("simulated evidence, allowed: %v", err)
	}
}

// A status other than UpToDate is accepted only if it is listed, and then
// only if every advisory its TCB levels name is accepted with it.
func TestCheckSGXStatusAndAdvisories(t *testing.T) {
	hardening := Identity{TEE: SGX, TCBStatus: "SWHardeningNeeded", TCBAdvisoryIDs: []string{"INTEL-SA-00615", "INTEL-SA-00657"}}
	upToDate := Identity{TEE: SGX, TCBStatus: "UpToDate"}
	accept := func(a ...AcceptedTCB) Expectations { return Expectations{AcceptedTCB: a} }
	for _, tc := range []struct {
		name  string
		exp   Expectations
		id    Identity
		field string // "" means accepted
	}{
		{"up to date, zero value", Expectations{}, upToDate, ""},
		{"hardening, zero value", Expectations{}, hardening, "tcb_status"},
		{"another status listed", accept(AcceptedTCB{Status: "ConfigurationNeeded", AnyAdvisory: true}), hardening, "tcb_status"},
		{"listed with one of two advisories", accept(AcceptedTCB{Status: "SWHardeningNeeded", Advisories: []string{"INTEL-SA-00615"}}), hardening, "tcb_advisories"},
		{"listed with no advisories", accept(AcceptedTCB{Status: "SWHardeningNeeded"}), hardening, "tcb_advisories"},
		{"listed with both advisories", accept(AcceptedTCB{Status: "SWHardeningNeeded", Advisories: []string{"INTEL-SA-00657", "INTEL-SA-00615", "INTEL-SA-00001"}}), hardening, ""},
		{"listed with any advisory", accept(AcceptedTCB{Status: "SWHardeningNeeded", AnyAdvisory: true}), hardening, ""},
		{"advisories of another status", accept(AcceptedTCB{Status: "ConfigurationNeeded", Advisories: []string{"INTEL-SA-00615", "INTEL-SA-00657"}}, AcceptedTCB{Status: "SWHardeningNeeded", Advisories: []string{"INTEL-SA-00615"}}), hardening, "tcb_advisories"},
		{"status without advisories", accept(AcceptedTCB{Status: "ConfigurationNeeded"}), Identity{TEE: SGX, TCBStatus: "ConfigurationNeeded"}, ""},
		{"revoked, even if listed", accept(AcceptedTCB{Status: "Revoked", AnyAdvisory: true}), Identity{TEE: SGX, TCBStatus: "Revoked"}, "tcb_status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.exp.Check(tc.id)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var me *MismatchError
			if !errors.As(err, &me) || me.Field != tc.field {
				t.Fatalf("err = %v, want mismatch on %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.id.TCBStatus) {
				t.Errorf("error %q does not name the status %s", err, tc.id.TCBStatus)
			}
		})
	}
	// The error names the advisories that were not accepted.
	err := accept(AcceptedTCB{Status: "SWHardeningNeeded", Advisories: []string{"INTEL-SA-00615"}}).Check(hardening)
	if err == nil || !strings.Contains(err.Error(), "INTEL-SA-00657") || strings.Contains(err.Error(), "got INTEL-SA-00615") {
		t.Errorf("error %v should name INTEL-SA-00657, the advisory not accepted", err)
	}
}

// TDX and SNP platforms are judged against a minimum TCB, byte by byte.
func TestCheckMinimumPlatformTCB(t *testing.T) {
	tdxTCB := []byte{3, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	snpTCB := []byte{3, 0, 8, 115}
	tdxID := Identity{TEE: TDX, PlatformTCB: tdxTCB}
	snpID := Identity{TEE: SNP, PlatformTCB: snpTCB}
	bump := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i]++; return c }
	for _, tc := range []struct {
		name  string
		exp   Expectations
		id    Identity
		field string
	}{
		{"tdx equal", Expectations{MinTDXTCB: tdxTCB}, tdxID, ""},
		{"tdx lower minimum", Expectations{MinTDXTCB: make([]byte, 16)}, tdxID, ""},
		{"tdx one byte higher", Expectations{MinTDXTCB: bump(tdxTCB, 2)}, tdxID, "platform_tcb"},
		{"tdx higher in a byte that is zero", Expectations{MinTDXTCB: bump(tdxTCB, 15)}, tdxID, "platform_tcb"},
		{"snp equal", Expectations{MinSNPTCB: snpTCB}, snpID, ""},
		{"snp microcode higher", Expectations{MinSNPTCB: bump(snpTCB, 3)}, snpID, "platform_tcb"},
		{"snp minimum does not judge tdx", Expectations{MinSNPTCB: snpTCB}, tdxID, "not judged"},
		{"tdx minimum of the wrong size", Expectations{MinTDXTCB: []byte{1}}, tdxID, "16 bytes"},
		{"evidence without a TCB", Expectations{MinSNPTCB: snpTCB}, Identity{TEE: SNP}, "platform_tcb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.exp.Check(tc.id)
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.field == "":
			case tc.field == "not judged":
				if !errors.Is(err, ErrTCBNotJudged) {
					t.Fatalf("err = %v, want ErrTCBNotJudged", err)
				}
			default:
				if err == nil {
					t.Fatalf("accepted, want an error about %s", tc.field)
				}
				var me *MismatchError
				if errors.As(err, &me) && me.Field != tc.field || !errors.As(err, &me) && !strings.Contains(err.Error(), tc.field) {
					t.Fatalf("err = %v, want one about %s", err, tc.field)
				}
			}
		})
	}
}

// TDX RTMRs and MRCONFIGID and SNP HOST_DATA and VMPL can be pinned. A pin
// is a requirement: evidence of a TEE that has no such field is refused.
func TestCheckPins(t *testing.T) {
	r := func(b byte) []byte { return bytes.Repeat([]byte{b}, 48) }
	tdxID := Identity{TEE: TDX, RTMRs: [4][]byte{r(0), r(1), r(2), r(3)}, MRConfigID: r(9)}
	snpID := Identity{TEE: SNP, HostData: bytes.Repeat([]byte{7}, 32), VMPL: 2}
	vmpl := func(v uint8) *uint8 { return &v }
	for _, tc := range []struct {
		name  string
		exp   Expectations
		id    Identity
		field string
	}{
		{"rtmrs equal", Expectations{RTMRs: [4][]byte{1: r(1), 3: r(3)}}, tdxID, ""},
		{"rtmr2 differs", Expectations{RTMRs: [4][]byte{1: r(1), 2: r(1)}}, tdxID, "rtmr2"},
		{"mrconfigid equal", Expectations{MRConfigID: r(9)}, tdxID, ""},
		{"mrconfigid differs", Expectations{MRConfigID: r(8)}, tdxID, "mrconfigid"},
		{"host data equal", Expectations{HostData: snpID.HostData}, snpID, ""},
		{"host data differs", Expectations{HostData: make([]byte, 32)}, snpID, "host_data"},
		{"vmpl equal", Expectations{VMPL: vmpl(2)}, snpID, ""},
		{"vmpl differs", Expectations{VMPL: vmpl(0)}, snpID, "vmpl"},
		{"rtmr pinned, snp evidence", Expectations{RTMRs: [4][]byte{0: r(0)}}, snpID, "rtmr0"},
		{"host data pinned, tdx evidence", Expectations{HostData: snpID.HostData}, tdxID, "host_data"},
		{"vmpl pinned, tdx evidence", Expectations{VMPL: vmpl(0)}, tdxID, "vmpl"},
		{"mrconfigid pinned, sgx evidence", Expectations{MRConfigID: r(9)}, Identity{TEE: SGX}, "mrconfigid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.exp.AllowUnjudgedTCB = true
			err := tc.exp.Check(tc.id)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var me *MismatchError
			if !errors.As(err, &me) || me.Field != tc.field {
				t.Fatalf("err = %v, want mismatch on %s", err, tc.field)
			}
			// Offline auditors use CheckCode: pins are about the code.
			if err := tc.exp.CheckCode(tc.id); !errors.As(err, &me) || me.Field != tc.field {
				t.Fatalf("CheckCode = %v, want mismatch on %s", err, tc.field)
			}
		})
	}
}
