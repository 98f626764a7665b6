package transparency

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
	"github.com/conftrace/conftrace/attest/sim"
	"github.com/conftrace/conftrace/attest/snp"
	"github.com/conftrace/conftrace/attest/tdx"
	"github.com/conftrace/conftrace/policy"
)

// teeNames name the kinds of TEE for people.
var teeNames = map[attest.TEE]string{
	attest.Sim: "Simulated TEE (no hardware protection)",
	attest.SGX: "Intel SGX enclave (under Gramine)",
	attest.TDX: "Intel TDX confidential VM",
	attest.SNP: "AMD SEV-SNP confidential VM",
}

// measurementNames say what a TEE's measurement is.
var measurementNames = map[attest.TEE]string{
	attest.Sim: "SHA-256 of the conftraced executable",
	attest.SGX: "MRENCLAVE",
	attest.TDX: "MRTD",
	attest.SNP: "launch digest",
}

// identityView is what the page says about the attested code.
type identityView struct {
	Measurement, MeasurementName string
	// Signer, ProductID and SVN are SGX's.
	Signer         string
	ProductID, SVN uint16
	Debug          bool
	// RTMRs and MRConfigID are TDX's; HostData and VMPL SNP's.
	RTMRs      []string
	MRConfigID string
	HostData   string
	VMPL       uint8
	TEE        attest.TEE
}

// tcbView is what the page can honestly say about the platform's TCB:
// what the evidence states, and how the policy's rules judge it with the
// code phones run (attest.Expectations.CheckTCB).
type tcbView struct {
	// Status is the SGX TCB status from Intel's collateral, with its
	// advisories; empty without collateral and for other TEEs.
	Status     string
	Advisories []string
	// PlatformTCB is the TDX TEE_TCB_SVN or the SNP reported TCB.
	PlatformTCB string
	// Minimum is the policy's minimum for TDX or SNP, empty if it names
	// none.
	Minimum string
	// Accepted lists what the policy accepts of SGX platforms besides
	// UpToDate.
	Accepted []policy.SGXAccepted
	// Refusal is empty if the policy's rules accept the platform, and
	// says why not otherwise.
	Refusal string
	// NotJudged says that nothing judged the TCB (SGX without
	// collateral, TDX or SNP without a minimum).
	NotJudged bool
}

// verifiers returns the verifiers of every TEE, verifying as of at: the
// time the bundle was issued, so that the page states what held then.
// They run offline: the SGX collateral travels with the evidence, and
// the TDX and SNP verifiers never fetch.
func verifiers(at time.Time) ([]attest.Verifier, error) {
	now := func() time.Time { return at }
	snpV, err := snp.NewVerifier(snp.VerifierOptions{Now: now})
	if err != nil {
		return nil, fmt.Errorf("transparency: SNP verifier: %w", err)
	}
	return []attest.Verifier{
		sim.NewVerifier(sim.VerifierOptions{AllowSimulated: true}),
		sgx.NewVerifier(sgx.VerifierOptions{Time: at}),
		tdx.NewVerifier(tdx.VerifierOptions{Now: now}),
		snpV,
	}, nil
}

// readEvidence verifies the bundle's own evidence with the verifiers
// phones use and checks that it binds the rest of the bundle. It accepts
// any measurement, debug mode and TCB: the page shows them rather than
// judging them, apart from the TCB (see judgeTCB).
func readEvidence(ctx context.Context, b attest.Bundle) (attest.Identity, error) {
	want, err := attest.BindReportData(b)
	if err != nil {
		return attest.Identity{}, err
	}
	vs, err := verifiers(time.Unix(b.IssuedAt, 0))
	if err != nil {
		return attest.Identity{}, err
	}
	for _, v := range vs {
		if v.TEE() != b.Evidence.TEE {
			continue
		}
		id, err := v.Verify(ctx, b.Evidence)
		switch {
		case err != nil:
			return attest.Identity{}, err
		case id.TEE != b.Evidence.TEE:
			return attest.Identity{}, fmt.Errorf("the %s verifier returned %q evidence", b.Evidence.TEE, id.TEE)
		case id.ReportData != want:
			return attest.Identity{}, errors.New("the evidence does not bind this bundle's keys, policy, validity and release statement")
		}
		return id, nil
	}
	return attest.Identity{}, fmt.Errorf("no verifier for %q evidence", b.Evidence.TEE)
}

func newIdentityView(id attest.Identity) *identityView {
	v := &identityView{
		TEE:             id.TEE,
		Measurement:     hex.EncodeToString(id.Measurement),
		MeasurementName: measurementNames[id.TEE],
		Debug:           id.Debug,
	}
	switch id.TEE {
	case attest.SGX:
		v.Signer, v.ProductID, v.SVN = hex.EncodeToString(id.Signer), id.ProductID, id.SVN
	case attest.TDX:
		for _, r := range id.RTMRs {
			v.RTMRs = append(v.RTMRs, hex.EncodeToString(r))
		}
		v.MRConfigID = hex.EncodeToString(id.MRConfigID)
	case attest.SNP:
		v.HostData, v.VMPL = hex.EncodeToString(id.HostData), id.VMPL
	}
	return v
}

// judgeTCB says what the evidence states about the platform's TCB and
// judges it by the policy's TCB rules alone, as attest.Expectations do
// for a phone that adds no rules of its own.
func judgeTCB(id attest.Identity, rules policy.TCB) tcbView {
	v := tcbView{Status: id.TCBStatus, Advisories: id.TCBAdvisoryIDs, Accepted: rules.SGXAccepted}
	switch id.TEE {
	case attest.TDX:
		v.PlatformTCB = hex.EncodeToString(id.PlatformTCB)
		v.Minimum = rules.TDXMinTCB
	case attest.SNP:
		v.PlatformTCB = snpTCB(id.PlatformTCB)
		if m := rules.SNPMinTCB; m != nil {
			v.Minimum = fmt.Sprintf("bootloader %d, TEE %d, SNP firmware %d, microcode %d", m.Bootloader, m.TEE, m.SNP, m.Microcode)
		}
	}
	if err := rules.Apply(attest.Expectations{AllowSimulated: true}).CheckTCB(id); err != nil {
		v.Refusal = strings.TrimPrefix(err.Error(), "attest: ")
		if v.NotJudged = errors.Is(err, attest.ErrTCBNotJudged); v.NotJudged {
			v.Refusal = strings.TrimPrefix(err.Error(), attest.ErrTCBNotJudged.Error()+": ")
		}
	}
	return v
}

// snpTCB spells an SNP reported TCB (bootloader, TEE, SNP, microcode).
func snpTCB(b []byte) string {
	if len(b) != 4 {
		return hex.EncodeToString(b)
	}
	return fmt.Sprintf("bootloader %d, TEE %d, SNP firmware %d, microcode %d", b[0], b[1], b[2], b[3])
}
