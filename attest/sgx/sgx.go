// Package sgx verifies Intel SGX DCAP quotes: the evidence of a conftrace
// backend running in an SGX enclave under Gramine.
//
// A quote is a statement signed, through a chain of keys, by the CPU: this
// enclave (its MRENCLAVE measurement, its MRSIGNER signer, its product ID
// and security version, its attributes) produced these 64 bytes of report
// data. [ParseQuote] decodes one; a [Verifier] checks it and returns the
// [attest.Identity] it proves, which [attest.Expectations] then judge:
//
//	v := sgx.NewVerifier(sgx.VerifierOptions{RequireCollateral: true})
//	id, err := attest.Verify(ctx, ev, reportData, attest.Expectations{
//		Measurements: [][]byte{mrenclave}, // reproduced from source
//	}, v)
//
// Only quotes of version 3 with an ECDSA-P256 attestation key and a PEM PCK
// certificate chain as certification data (type 5, what Gramine returns on
// a DCAP machine) are accepted. The package uses only the Go standard
// library, with Intel's SGX Root CA certificate built in.
//
// # Collateral
//
// To judge the platform's TCB, the verifier needs Intel's current TCB info
// for the platform's FMSPC ([Quote.FMSPC]) and the QE identity, from the
// Intel Provisioning Certification Service (or a caching service):
//
//	GET https://api.trustedservices.intel.com/sgx/certification/v4/tcb?fmspc=<FMSPC>
//	GET https://api.trustedservices.intel.com/sgx/certification/v4/qe/identity
//
// [NewCollateral] takes the two response bodies and the issuer chain from
// the TCB-Info-Issuer-Chain response header. Pass the result to the
// verifier ([VerifierOptions.Collateral]), or send it along with the quote
// in [attest.Evidence.Collateral] ([Collateral.Marshal]). Collateral is
// valid for about a month; refresh it daily.
//
// A conftrace backend serves collateral with every quote, so that phones
// judge the TCB without asking Intel anything (which would tell Intel, or a
// PCCS operator, who uses the backend). It takes the collateral from a
// [CollateralSource]: a [CollateralDir] that the operator keeps fresh, or
// [PCS], which fetches it from Intel PCS or a PCCS at each attestation.
//
// # What is checked, in order
//
//  1. The quote's format ([ParseQuote]): version, key type, TEE type and
//     every length field.
//  2. The PCK certificate chain in the quote: exactly three certificates, an
//     "Intel SGX PCK Certificate" issued by an "Intel SGX PCK Platform CA"
//     or "Intel SGX PCK Processor CA", issued by the Intel SGX Root CA. The
//     root in the quote must be byte for byte the pinned root, whose SHA-256
//     is [RootCertSHA256]; the chain is verified with crypto/x509 at the
//     verification time (validity periods, signatures, CA constraints).
//  3. The QE report signature: the PCK key signs the quoting enclave's
//     report body.
//  4. The QE report binding: the first 32 bytes of the QE report data are
//     SHA-256(attestation key || QE authentication data) and the last 32
//     are zero, so the PCK-certified quoting enclave vouches for the
//     attestation key.
//  5. The quote signature: the attestation key signs the header and the
//     enclave's report body.
//  6. With collateral (see [Collateral]) the platform's TCB is judged:
//     the TCB info and QE identity signatures by the Intel SGX TCB Signing
//     certificate, whose chain must end at the same pinned root; their
//     issue and next-update dates against the verification time; optional
//     CRLs (see [Collateral.PCKCRL]); the QE report against the QE identity
//     (MRSIGNER, ISVPRODID, MISCSELECT and ATTRIBUTES under their masks,
//     ISVSVN to a TCB level); the FMSPC and PCE ID of the PCK certificate
//     against the TCB info; and the platform's TCB level, found from the
//     TCB component SVNs and PCESVN of the PCK certificate's SGX extension.
//     The platform status and the QE status are combined as Intel's quote
//     verification library does (see [Verifier.Verify]). A Revoked status is
//     always refused; any other status is reported in
//     [attest.Identity.TCBStatus], with the advisory IDs of both TCB levels
//     in [attest.Identity.TCBAdvisoryIDs], for [attest.Expectations] to
//     judge.
//
// # What is not checked
//
// Without collateral, step 6 is skipped: the quote proves that some genuine
// SGX platform ran the enclave, but not that the platform's microcode,
// firmware and quoting enclave are free of known vulnerabilities, and
// Identity.TCBStatus is empty, which [attest.Expectations] refuse unless
// they allow an unjudged TCB. Set [VerifierOptions.RequireCollateral] to
// have the verifier itself refuse such quotes, as conftrace's clients do.
//
// Revocation of PCK certificates is checked only when the collateral carries
// the CRLs, which [PCS] does not fetch; verification itself never fetches
// anything. Collateral is trusted as
// fresh if the verification time lies between its issue and next-update
// dates; an attacker who replays old, still-unexpired collateral can hide a
// TCB recovery for up to its validity period (about 30 days). The QE
// identity's and TCB info's tcbEvaluationDataNumber are not compared with
// any minimum. The platform's TCB status says nothing about the enclave's own
// code: that is what MRENCLAVE is for.
package sgx

import (
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"errors"
	"sync"
)

// RootCertSHA256 is the hex SHA-256 of the DER Intel SGX Root CA
// certificate that this package pins.
const RootCertSHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

//go:embed intel_sgx_root_ca.pem
var rootPEM []byte

// intelRoot parses the embedded root once; it never changes afterwards.
var intelRoot = sync.OnceValue(func() *x509.Certificate {
	b, _ := pem.Decode(rootPEM)
	if b == nil {
		panic("sgx: embedded Intel SGX Root CA is not PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		panic("sgx: embedded Intel SGX Root CA: " + err.Error())
	}
	return c
})

// Errors returned by [ParseQuote], [ParseCollateral] and [Verifier.Verify],
// wrapped with details. Each names one kind of failure.
var (
	// ErrTruncated means the quote ends before a fixed-size field.
	ErrTruncated = errors.New("sgx: quote truncated")
	// ErrVersion means the quote is not version 3.
	ErrVersion = errors.New("sgx: unsupported quote version")
	// ErrKeyType means the attestation key is not ECDSA-P256.
	ErrKeyType = errors.New("sgx: unsupported attestation key type")
	// ErrTEEType means the quote is not of an SGX enclave.
	ErrTEEType = errors.New("sgx: unsupported TEE type")
	// ErrLength means a length field of the quote exceeds the bytes present
	// or leaves bytes unaccounted for.
	ErrLength = errors.New("sgx: inconsistent quote length field")
	// ErrCertDataType means the certification data is not a PEM PCK
	// certificate chain (type 5).
	ErrCertDataType = errors.New("sgx: unsupported certification data type")

	// ErrUntrustedRoot means a certificate chain does not end at the pinned
	// Intel SGX Root CA.
	ErrUntrustedRoot = errors.New("sgx: certificate chain does not end at the Intel SGX Root CA")
	// ErrPCKChain means the PCK certificate chain is malformed or does not
	// verify (bad signature, expired or not yet valid certificate, wrong
	// certificate names). When crypto/x509 refused it, its error is wrapped
	// too.
	ErrPCKChain = errors.New("sgx: invalid PCK certificate chain")
	// ErrPCKExtension means the PCK certificate's SGX extension is missing
	// or malformed.
	ErrPCKExtension = errors.New("sgx: invalid SGX extension in PCK certificate")
	// ErrQEReportSignature means the PCK key's signature over the QE report
	// does not verify.
	ErrQEReportSignature = errors.New("sgx: bad QE report signature")
	// ErrQEReportData means the QE report data does not bind the
	// attestation key and the QE authentication data.
	ErrQEReportData = errors.New("sgx: QE report data does not bind the attestation key")
	// ErrQuoteSignature means the attestation key's signature over the
	// header and report body does not verify, or the key is not a P-256
	// point.
	ErrQuoteSignature = errors.New("sgx: bad quote signature")

	// ErrNoCollateral means the verifier requires collateral and neither
	// the evidence nor the verifier had any.
	ErrNoCollateral = errors.New("sgx: no collateral to judge the platform TCB")
	// ErrCollateral means the collateral is malformed or unsupported (not
	// TCB info v3 for SGX, not QE identity v2 for the QE, bad hex, unknown
	// status, ...).
	ErrCollateral = errors.New("sgx: malformed collateral")
	// ErrCollateralSignature means the TCB info or QE identity signature
	// does not verify, or the TCB signing chain is invalid.
	ErrCollateralSignature = errors.New("sgx: invalid collateral signature")
	// ErrCollateralExpired means the verification time is before the issue
	// date or after the next-update date of the TCB info, the QE identity
	// or a CRL.
	ErrCollateralExpired = errors.New("sgx: collateral not valid at verification time")
	// ErrPlatformMismatch means the TCB info is for another platform: its
	// FMSPC or PCE ID differs from the PCK certificate's.
	ErrPlatformMismatch = errors.New("sgx: collateral is for another platform")
	// ErrQEIdentity means the quoting enclave does not match the QE
	// identity.
	ErrQEIdentity = errors.New("sgx: quoting enclave does not match QE identity")
	// ErrTCBLevel means no TCB level of the collateral applies to the
	// platform or the quoting enclave: it is older than any level Intel
	// lists.
	ErrTCBLevel = errors.New("sgx: TCB level not supported")
	// ErrRevoked means the platform TCB, the quoting enclave or a
	// certificate is revoked.
	ErrRevoked = errors.New("sgx: revoked")
)
