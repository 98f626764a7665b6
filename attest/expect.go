package attest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrSimulated is returned when simulated evidence meets expectations that
// do not allow it.
var ErrSimulated = errors.New("attest: simulated TEE evidence refused: it proves nothing about the platform (allow it explicitly for development)")

// Expectations say which identities a caller accepts. The zero value
// accepts only non-debug, non-simulated evidence from a platform whose TCB
// was judged good: SGX evidence with collateral whose status is UpToDate.
// It refuses SGX evidence without collateral and TDX and SNP evidence,
// whose TCB it has no minimum to judge by (see the package documentation).
// It accepts any measurement: callers that care which code they talk to
// (every production client) set Measurements.
//
// A client that verifies a conftrace backend takes its TCB requirements
// from the attested policy (see package policy), on top of its own.
type Expectations struct {
	// Measurements lists the acceptable measurements; empty accepts any.
	Measurements [][]byte
	// Signers lists the acceptable signers (MRSIGNER); empty accepts any.
	Signers [][]byte
	// ProductID, when non-nil, is the required product identifier.
	ProductID *uint16
	// MinSVN is the lowest acceptable security version number.
	MinSVN uint16

	// RTMRs holds the expected TDX runtime measurement registers; a nil
	// entry accepts any value. MRConfigID, when not nil, is the expected
	// TDX MRCONFIGID. Setting any of them accepts TDX evidence only.
	RTMRs      [RTMRCount][]byte
	MRConfigID []byte
	// HostData, when not nil, is the expected SNP HOST_DATA, and VMPL,
	// when not nil, the VMPL the SNP report must come from. Setting either
	// accepts SNP evidence only.
	HostData []byte
	VMPL     *uint8

	// AllowDebug accepts debug-mode TEEs, whose memory the host can read.
	AllowDebug bool
	// AllowSimulated accepts evidence from the simulated TEE.
	AllowSimulated bool

	// AcceptedTCB lists the SGX TCB statuses accepted besides UpToDate,
	// each with the advisories accepted with it. Revoked is never
	// accepted.
	AcceptedTCB []AcceptedTCB
	// MinTDXTCB, when set, is the lowest acceptable TEE_TCB_SVN of TDX
	// evidence (16 bytes, compared byte by byte). Without it TDX evidence's
	// TCB is not judged.
	MinTDXTCB []byte
	// MinSNPTCB, when set, is the lowest acceptable reported TCB of SNP
	// evidence: four bytes, the bootloader, TEE, SNP firmware and
	// microcode security patch levels, compared one by one. Without it SNP
	// evidence's TCB is not judged.
	MinSNPTCB []byte
	// AllowUnjudgedTCB accepts evidence whose platform TCB was not judged:
	// SGX evidence without collateral, TDX or SNP evidence without a
	// minimum. Such a platform may run microcode or firmware with known,
	// exploitable flaws. For development and for auditors only.
	AllowUnjudgedTCB bool
}

// MismatchError reports an identity field that did not meet expectations.
type MismatchError struct {
	Field string // e.g. "measurement", "debug", "tcb_status"
	Got   string
	Want  string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("attest: %s mismatch: got %s, want %s", e.Field, e.Got, e.Want)
}

// Check reports whether id meets the expectations, naming the first field
// that does not: the code ([Expectations.CheckCode]), then the platform's
// state (debug mode, then its TCB: [Expectations.CheckTCB]).
func (e Expectations) Check(id Identity) error {
	if id.TEE == Sim && !e.AllowSimulated {
		return ErrSimulated
	}
	if id.Debug && !e.AllowDebug {
		return &MismatchError{Field: "debug", Got: "true", Want: "false (debug TEEs expose their memory to the host)"}
	}
	if err := e.CheckCode(id); err != nil {
		return err
	}
	return e.CheckTCB(id)
}

// CheckCode reports whether id is the code the expectations accept:
// simulation, measurement, signer, product and security version, and the
// pinned TDX registers and SNP host data and VMPL. It does not judge the
// platform's state (debug mode, TCB), which an auditor inspecting evidence
// offline may want reported rather than refused; clients use Check.
func (e Expectations) CheckCode(id Identity) error {
	if id.TEE == Sim && !e.AllowSimulated {
		return ErrSimulated
	}
	if len(e.Measurements) > 0 && !containsBytes(e.Measurements, id.Measurement) {
		return &MismatchError{Field: "measurement", Got: hex.EncodeToString(id.Measurement), Want: hexList(e.Measurements)}
	}
	if len(e.Signers) > 0 && !containsBytes(e.Signers, id.Signer) {
		return &MismatchError{Field: "signer", Got: hex.EncodeToString(id.Signer), Want: hexList(e.Signers)}
	}
	if e.ProductID != nil && id.ProductID != *e.ProductID {
		return &MismatchError{Field: "product_id", Got: fmt.Sprint(id.ProductID), Want: fmt.Sprint(*e.ProductID)}
	}
	if id.SVN < e.MinSVN {
		return &MismatchError{Field: "svn", Got: fmt.Sprint(id.SVN), Want: fmt.Sprintf(">= %d", e.MinSVN)}
	}
	return e.checkPins(id)
}

// measurementSizes are the lengths of the measurements of the TEEs
// conftrace runs in: 32 bytes (sim, SGX MRENCLAVE) and 48 bytes (TDX MRTD,
// SEV-SNP launch digest).
var measurementSizes = []int{32, 48}

// ParseMeasurement decodes a measurement written in hex, as auditors publish
// and users paste them, and checks its length, so that a truncated paste
// fails here rather than as a mismatch later.
func ParseMeasurement(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("attest: measurement %q is not valid hex: %w", s, err)
	}
	if !slices.Contains(measurementSizes, len(b)) {
		return nil, fmt.Errorf("attest: measurement %q is %d bytes, want 32 (sim, sgx) or 48 (tdx, snp)", s, len(b))
	}
	return b, nil
}

func containsBytes(list [][]byte, b []byte) bool {
	return slices.ContainsFunc(list, func(x []byte) bool { return bytes.Equal(x, b) })
}

func hexList(list [][]byte) string {
	s := make([]string, len(list))
	for i, b := range list {
		s[i] = hex.EncodeToString(b)
	}
	if len(s) == 1 {
		return s[0]
	}
	return "one of " + strings.Join(s, ", ")
}
