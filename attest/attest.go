// Package attest lets a client decide whether to trust a conftrace backend.
//
// A backend runs inside a trusted execution environment (TEE). The TEE
// produces [Evidence]: a hardware-signed statement of which code is running
// (its measurement) and of 64 bytes of [ReportData] that the code chose. A
// conftrace backend puts in the report data a hash of the Oblivious HTTP key
// configuration it serves and of its policy document, so that verified
// evidence vouches for both (see [Bundle]).
//
// A [Verifier] checks evidence of one kind of TEE (sim, sgx, tdx, snp) and
// returns the [Identity] it proves. [Expectations] then say which identities
// the caller accepts: the measurements an auditor has reproduced from source,
// the signer, the TDX registers and SNP host data pinned beside them,
// whether debug enclaves or simulated evidence are acceptable, and which
// platform TCBs are good enough. Nothing is accepted by default that a
// caller did not ask for: simulated evidence, debug enclaves, platforms
// whose TCB is not up to date and platforms whose TCB was not judged at all
// are refused unless the expectations allow them.
//
// # Judging the platform's TCB
//
// A quote proves which code runs, and on a genuine platform; whether that
// platform's microcode, firmware and quoting enclave are free of known
// vulnerabilities (its trusted computing base, TCB) is a separate judgement:
//
//   - SGX: Intel publishes signed collateral (TCB info, QE identity) from
//     which the verifier derives a TCB status ("UpToDate",
//     "SWHardeningNeeded", ...) and the security advisories behind it. A
//     conftrace backend serves the collateral with its evidence
//     ([Evidence.Collateral]). [Expectations] accept UpToDate, and other
//     statuses only as [Expectations.AcceptedTCB] lists them with their
//     advisories. SGX evidence without collateral has no status and is
//     refused.
//   - TDX and SNP: the verifiers judge no collateral; the evidence states
//     the platform's TCB version ([Identity.PlatformTCB]), which must reach
//     [Expectations.MinTDXTCB] or [Expectations.MinSNPTCB] in every
//     component. Without a minimum for its TEE, such evidence is refused.
//     A conftrace client takes the minimums, and the SGX statuses it
//     accepts, from the backend's attested policy (package policy, TCB).
//   - The simulated TEE has no platform; its evidence is accepted only with
//     [Expectations.AllowSimulated].
//
// [Expectations.AllowUnjudgedTCB] accepts evidence whose TCB was not judged;
// it exists for development and for auditors who look at the identity alone.
//
// The verifiers live in subpackages: attest/sim (a software stand-in for
// development, which proves nothing about the platform), attest/sgx (Intel
// SGX DCAP quotes), attest/tdx and attest/snp (confidential VMs).
package attest

import (
	"context"
	"fmt"
)

// TEE names a kind of trusted execution environment.
type TEE string

// The kinds of TEE that conftrace knows.
const (
	// Sim is the simulated TEE used for development, tests and the demo.
	// Its evidence is signed by a software key and proves nothing about the
	// platform.
	Sim TEE = "sim"
	// SGX is an Intel SGX enclave (conftrace runs under Gramine-SGX).
	SGX TEE = "sgx"
	// TDX is an Intel TDX confidential VM.
	TDX TEE = "tdx"
	// SNP is an AMD SEV-SNP confidential VM.
	SNP TEE = "snp"
)

// ReportDataSize is the number of bytes of caller data bound into evidence.
const ReportDataSize = 64

// ReportData is the caller-chosen data that evidence binds to the platform.
type ReportData [ReportDataSize]byte

// Evidence is what an [Attester] produces and a [Verifier] checks.
type Evidence struct {
	// TEE says which kind of TEE produced the evidence and so which
	// verifier must check it.
	TEE TEE `json:"tee"`
	// Data is the raw evidence in the TEE's own format: an SGX quote, a TDX
	// quote, an SNP attestation report with its certificates, or a sim
	// evidence document.
	Data []byte `json:"data"`
	// Collateral carries the endorsements a verifier needs to judge the
	// platform's TCB offline, in a format defined by the TEE's verifier
	// package. SGX evidence needs it (TCB info, QE identity and their
	// signing chain: see attest/sgx), or its TCB is not judged; TDX and SNP
	// evidence carries none.
	Collateral []byte `json:"collateral,omitempty"`
}

// Attester produces evidence about the code that calls it. Only code running
// inside a TEE can produce evidence that verifies as anything but [Sim].
type Attester interface {
	// TEE reports which kind of evidence Attest produces.
	TEE() TEE
	// Attest returns fresh evidence binding reportData.
	Attest(ctx context.Context, reportData ReportData) (Evidence, error)
}

// Identity is what verified evidence proves about the code that produced it.
type Identity struct {
	// TEE is the kind of TEE that produced the evidence.
	TEE TEE `json:"tee"`
	// Measurement identifies the code: MRENCLAVE for SGX, MRTD for TDX, the
	// launch measurement for SNP, the SHA-256 of the executable for sim.
	Measurement []byte `json:"measurement"`
	// Signer identifies who signed the code where the TEE has such a notion
	// (MRSIGNER for SGX); nil otherwise.
	Signer []byte `json:"signer,omitempty"`
	// ProductID and SVN are the product identifier and security version
	// number the code declares (ISVPRODID and ISVSVN for SGX).
	ProductID uint16 `json:"product_id"`
	SVN       uint16 `json:"svn"`
	// Debug reports whether the TEE runs in debug mode, in which the host
	// can read its memory. Debug evidence proves nothing about secrecy.
	Debug bool `json:"debug"`
	// TCBStatus is the platform's trusted computing base status as judged
	// from collateral ("UpToDate", "SWHardeningNeeded", "OutOfDate", ...),
	// or empty when the verifier had no collateral to judge it.
	TCBStatus string `json:"tcb_status,omitempty"`
	// TCBAdvisoryIDs are the security advisories ("INTEL-SA-00615", ...)
	// that the TCB levels behind TCBStatus name, sorted: what the platform
	// or its quoting enclave is exposed to.
	TCBAdvisoryIDs []string `json:"tcb_advisory_ids,omitempty"`
	// PlatformTCB is the platform's TCB version as TDX and SNP evidence
	// states it: for TDX the 16-byte TEE_TCB_SVN (the TDX module's security
	// version), for SNP the reported TCB's four security patch levels
	// (bootloader, TEE, SNP firmware, microcode); nil for other TEEs.
	// [Expectations] compare it byte by byte with a minimum.
	PlatformTCB []byte `json:"platform_tcb,omitempty"`
	// RTMRs are a TDX guest's runtime measurement registers RTMR0 to
	// RTMR3 (48 bytes each), which the firmware and the guest extend with
	// what they boot; all nil for other TEEs.
	RTMRs [RTMRCount][]byte `json:"rtmrs,omitzero"`
	// MRConfigID is a TDX guest's MRCONFIGID (48 bytes), which the host
	// sets when it creates the TD; nil for other TEEs.
	MRConfigID []byte `json:"mr_config_id,omitempty"`
	// HostData is an SNP guest's HOST_DATA (32 bytes), which the host
	// sets at launch; nil for other TEEs.
	HostData []byte `json:"host_data,omitempty"`
	// VMPL is the SNP virtual machine privilege level that requested the
	// report (0 is the most privileged); zero for other TEEs.
	VMPL uint8 `json:"vmpl,omitempty"`
	// ReportData is the data the evidence binds.
	ReportData ReportData `json:"report_data"`
}

// RTMRCount is the number of runtime measurement registers of a TDX guest.
const RTMRCount = 4

// Verifier checks the evidence of one kind of TEE and reports the identity it
// proves. A Verifier checks signatures and certificate chains; whether the
// identity is acceptable is decided by [Expectations.Check].
type Verifier interface {
	// TEE reports which kind of evidence the verifier checks.
	TEE() TEE
	// Verify checks ev and returns the identity it proves.
	Verify(ctx context.Context, ev Evidence) (Identity, error)
}

// Verify checks ev with the verifier for its TEE, then checks that it binds
// reportData and that its identity meets exp. Simulated evidence is refused
// before any verifier sees it unless exp.AllowSimulated is set.
func Verify(ctx context.Context, ev Evidence, reportData ReportData, exp Expectations, verifiers ...Verifier) (Identity, error) {
	if ev.TEE == Sim && !exp.AllowSimulated {
		return Identity{}, ErrSimulated
	}
	var v Verifier
	for _, cand := range verifiers {
		if cand.TEE() == ev.TEE {
			v = cand
			break
		}
	}
	if v == nil {
		return Identity{}, fmt.Errorf("attest: no verifier for %q evidence", ev.TEE)
	}
	id, err := v.Verify(ctx, ev)
	if err != nil {
		return Identity{}, fmt.Errorf("attest: %s evidence: %w", ev.TEE, err)
	}
	if id.TEE != ev.TEE {
		return Identity{}, fmt.Errorf("attest: %s verifier returned a %q identity", ev.TEE, id.TEE)
	}
	if id.ReportData != reportData {
		return Identity{}, &MismatchError{Field: "report_data", Got: fmt.Sprintf("%x", id.ReportData[:]), Want: fmt.Sprintf("%x", reportData[:])}
	}
	if err := exp.Check(id); err != nil {
		return Identity{}, err
	}
	return id, nil
}
