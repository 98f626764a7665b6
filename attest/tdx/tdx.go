// Package tdx verifies the evidence of a conftrace backend running in an
// Intel TDX confidential VM (a "trust domain", TD).
//
// A TDX quote is produced by Intel's quoting enclave on the machine the TD
// runs on. It carries the TD's measurements — MRTD, the measurement of the
// initial TD image (its virtual firmware), and four runtime measurement
// registers (RTMRs) that the firmware and the guest extend with what they
// boot — its attributes (including whether the TD is debuggable) and 64
// bytes of report data that the guest chose: conftrace puts there the hash
// of the key configuration and policy it serves. The quote is signed by an
// attestation key that the quoting enclave certifies with its own report,
// signed by the platform's PCK key, whose certificate chains to Intel's SGX
// root CA.
//
// A [Verifier] checks such evidence offline and returns the
// [attest.Identity] it proves; [attest.Verify] then checks it against the
// caller's [attest.Expectations]:
//
//	id, err := attest.Verify(ctx, ev, reportData, attest.Expectations{
//		Measurements: [][]byte{mrtd},           // reproduced by the auditor
//		RTMRs:        [4][]byte{2: kernelRTMR}, // the measured boot that pins the binary
//		MinTDXTCB:    minSVN,                   // from Intel's advisories
//	}, tdx.NewVerifier(tdx.VerifierOptions{}))
//
// [Verifier.VerifyQuote] returns all the quote's measurements (RTMRs,
// MRCONFIGID, MROWNER, the TDX module's MRSEAM, ...) for an auditor to print
// or judge.
//
// # Evidence format
//
// The Data of an [attest.Evidence] whose TEE is [attest.TDX] is a raw TDX
// DCAP quote, version 4, as Linux's configfs-tsm interface returns it
// (outblob), with the PCK certificate chain embedded (certification data
// type 5). The Collateral field is unused and must be empty.
//
// # What is checked
//
// With go-tdx-guest's verify and validate packages:
//
//   - The quote is a well-formed version 4 quote of a TDX TEE with an
//     ECDSA-256 attestation key.
//   - The PCK certificate chain in the quote chains to the Intel SGX root CA
//     pinned in this package (the same certificate go-tdx-guest embeds,
//     SHA-256 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3),
//     and every certificate is valid at the verification time
//     ([VerifierOptions.Now]).
//   - The quoting enclave's report is signed by the PCK key and binds the
//     attestation key (and the QE authentication data).
//   - The quote's signature over its header and TD report body verifies
//     with the attestation key.
//   - The TD attributes and XFAM have no bits set that TDX reserves.
//   - When [VerifierOptions.MinimumTEETCBSVN] is set, every byte of the
//     quote's TEE_TCB_SVN (the security version of the TDX module) is at
//     least the minimum's; evidence below it fails with [ErrTCBTooLow].
//   - When [VerifierOptions.RTMRs], MRConfigID or MROwner are set, the
//     quote's registers equal them; evidence that differs fails with
//     [ErrMismatch].
//
// Verification never touches the network: collateral fetching is disabled
// and the HTTP getter handed to the library refuses every request.
//
// # What is not checked
//
//   - Collateral: TCB info and the QE identity are not fetched, so the
//     platform's TCB status (whether its microcode, SEAM module and quoting
//     enclave are up to date) is not judged and the identity's TCBStatus is
//     empty. Neither is the identity of the quoting enclave compared with
//     Intel's published one. The identity's PlatformTCB is the TEE_TCB_SVN,
//     which [attest.Expectations] compare with their MinTDXTCB, and refuse
//     as "not judged" when they have none; a conftrace client takes it from
//     the attested policy. That judges the TDX module's version only, not
//     the CPU's microcode (in the PCK certificate) or the quoting enclave.
//     The verifier itself accepts any TDX module version unless
//     [VerifierOptions.MinimumTEETCBSVN] is set.
//   - Revocation: Intel's certificate revocation lists are not consulted.
//   - MROWNERCONFIG, and the RTMRs, MRCONFIGID and MROWNER unless they are
//     set in [VerifierOptions] (or, for the RTMRs and MRCONFIGID, in
//     [attest.Expectations], which judge the identity). The identity's
//     Measurement is MRTD alone, which covers only the TD's virtual
//     firmware; what the firmware then booted is in the RTMRs, which the
//     identity and [Verifier.VerifyQuote] return for the auditor who
//     reproduces them. A deployment that pins the conftrace binary by RTMR
//     sets [attest.Expectations.RTMRs].
//   - The TDX module (MRSEAM, MRSIGNERSEAM, SEAM attributes), beyond
//     returning them.
//
// The identity's Debug is the DEBUG bit (bit 0) of the TD attributes; a
// debuggable TD's memory can be read by the host. TDX has no guest SVN,
// product ID or signer of the TD image: SVN and ProductID are zero and
// Signer is nil.
package tdx

import (
	"bytes"
	"context"
	"crypto/x509"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/conftrace/conftrace/attest"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/validate"
	"github.com/google/go-tdx-guest/verify"
)

// intelRootPEM is the Intel SGX Root CA certificate, which also roots TDX
// PCK chains. It is a copy of the one go-tdx-guest embeds; conftrace passes
// it explicitly so that the pin is visible here and so that the library
// does not log a warning to standard output on every verification.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

// tdAttributesDebug is the DEBUG bit of TDATTRIBUTES: when set, the host
// (through the TDX module's debug interface) can read and write TD memory.
const tdAttributesDebug = 1 << 0

var (
	// ErrMalformed is returned for evidence that cannot be decoded.
	ErrMalformed = errors.New("tdx: malformed evidence")
	// ErrVerification is returned when the evidence does not verify: a bad
	// quote or QE report signature, a PCK chain that does not lead to a
	// trusted root or is not valid at the verification time, or reserved
	// attribute bits.
	ErrVerification = errors.New("tdx: evidence does not verify")
	// ErrTCBTooLow is returned for evidence that verifies but whose
	// TEE_TCB_SVN is below [VerifierOptions.MinimumTEETCBSVN] in at least
	// one byte: the TD runs on a TDX module older than the caller accepts.
	// It does not wrap [ErrVerification].
	ErrTCBTooLow = errors.New("tdx: TEE TCB SVN is below the minimum")
	// ErrMismatch is returned for evidence that verifies but whose RTMRs,
	// MRCONFIGID or MROWNER differ from the values in [VerifierOptions]:
	// the TD booted or was configured with something other than what the
	// caller expects. It does not wrap [ErrVerification].
	ErrMismatch = errors.New("tdx: quote differs from the expected values")
)

// TEETCBSVNSize is the size of a TEE_TCB_SVN, the security version of the
// TDX module that a quote reports.
const TEETCBSVNSize = 16

// MeasurementSize is the size of MRTD, the RTMRs, MRCONFIGID and MROWNER.
const MeasurementSize = 48

// RTMRCount is the number of runtime measurement registers in a TD.
const RTMRCount = 4

// Quote holds the fields of a verified TDX quote that an auditor or operator
// may want to see. Byte slices are copies; measurements are 48 bytes.
type Quote struct {
	// MRTD is the measurement of the initial TD image (its virtual firmware).
	MRTD []byte
	// RTMRs are the runtime measurement registers, extended by the firmware
	// (RTMR0: configuration, RTMR1: boot loader and kernel) and the guest.
	RTMRs [RTMRCount][]byte
	// MRConfigID, MROwner and MROwnerConfig are set by the host when it
	// creates the TD, usually all zeros.
	MRConfigID, MROwner, MROwnerConfig []byte
	// TDAttributes are the TD's attributes (bit 0: DEBUG; bit 28:
	// SEPT_VE_DISABLE; bit 30: PKS; bit 63: PERFMON).
	TDAttributes uint64
	// XFAM is the set of extended CPU features the TD may use.
	XFAM uint64
	// TEETCBSVN is the 16-byte security version of the TDX module.
	TEETCBSVN []byte
	// MRSeam and MRSignerSeam measure the TDX module and its signer.
	MRSeam, MRSignerSeam []byte
	// SeamAttributes are the TDX module's attributes.
	SeamAttributes []byte
	// QESVN and PCESVN are the security versions of the quoting and
	// provisioning certification enclaves.
	QESVN, PCESVN uint16
	// ReportData is the data the guest bound into the quote.
	ReportData attest.ReportData
}

// Debug reports whether the TD is debuggable, that is, whether the host can
// read its memory.
func (q *Quote) Debug() bool { return q.TDAttributes&tdAttributesDebug != 0 }

// Identity returns the attestation identity the quote proves: MRTD as the
// measurement, the RTMRs and MRCONFIGID for callers to pin, and the
// TEE_TCB_SVN as the platform's TCB.
func (q *Quote) Identity() attest.Identity {
	id := attest.Identity{
		TEE:         attest.TDX,
		Measurement: bytes.Clone(q.MRTD),
		Debug:       q.Debug(),
		PlatformTCB: bytes.Clone(q.TEETCBSVN),
		MRConfigID:  bytes.Clone(q.MRConfigID),
		ReportData:  q.ReportData,
	}
	for i, r := range q.RTMRs {
		id.RTMRs[i] = bytes.Clone(r)
	}
	return id
}

// VerifierOptions configure a [Verifier].
type VerifierOptions struct {
	// Now returns the time at which certificates must be valid; nil means
	// time.Now. Auditors re-checking old evidence set it.
	Now func() time.Time
	// Roots, when not nil, replaces the pinned Intel SGX root CA with the
	// PEM certificates it holds. Tests use it to trust a fake Intel.
	Roots []byte
	// MinimumTEETCBSVN, when not zero, is the lowest acceptable TEE_TCB_SVN,
	// byte by byte: evidence from a TD on an older TDX module fails with
	// [ErrTCBTooLow]. The zero value accepts any, because offline there is
	// no collateral to say which is current; deployments should set it
	// (see the package documentation).
	MinimumTEETCBSVN [TEETCBSVNSize]byte
	// RTMRs holds the expected value of each runtime measurement register;
	// a nil entry accepts any value. Evidence that differs in a register
	// that is set fails with [ErrMismatch].
	RTMRs [RTMRCount]*[MeasurementSize]byte
	// MRConfigID and MROwner, when not nil, are the expected MRCONFIGID
	// and MROWNER, which the host sets when it creates the TD (for example
	// to the hash of a configuration it passes to the TD). Evidence that
	// differs fails with [ErrMismatch].
	MRConfigID, MROwner *[MeasurementSize]byte
}

// Verifier checks TDX evidence. It implements [attest.Verifier] for
// [attest.TDX]. The zero Verifier trusts Intel's root and verifies at the
// current time.
type Verifier struct {
	now   func() time.Time
	roots *x509.CertPool
	// minTCB and expect are the TCB minimum and the exact-match fields of
	// the validate options, each checked on its own.
	minTCB []byte
	expect validate.TdQuoteBodyOptions
}

var _ attest.Verifier = (*Verifier)(nil)

// NewVerifier returns a verifier configured by opts. If opts.Roots holds no
// certificate, the verifier trusts nothing and refuses all evidence.
func NewVerifier(opts VerifierOptions) *Verifier {
	v := &Verifier{now: opts.Now, roots: x509.NewCertPool()}
	if opts.MinimumTEETCBSVN != ([TEETCBSVNSize]byte{}) {
		v.minTCB = bytes.Clone(opts.MinimumTEETCBSVN[:])
	}
	// Copies, so that later changes to opts do not change the verifier.
	clone := func(m *[MeasurementSize]byte) []byte {
		if m == nil {
			return nil
		}
		return bytes.Clone(m[:])
	}
	for i, r := range opts.RTMRs {
		if r != nil {
			if v.expect.Rtmrs == nil {
				// go-tdx-guest wants all four entries, nil for "any".
				v.expect.Rtmrs = make([][]byte, RTMRCount)
			}
			v.expect.Rtmrs[i] = clone(r)
		}
	}
	v.expect.MrConfigID = clone(opts.MRConfigID)
	v.expect.MrOwner = clone(opts.MROwner)
	if opts.Roots != nil {
		v.roots.AppendCertsFromPEM(opts.Roots)
	} else {
		v.roots.AppendCertsFromPEM(intelRootPEM)
	}
	return v
}

// TEE returns [attest.TDX].
func (v *Verifier) TEE() attest.TEE { return attest.TDX }

// Verify checks ev and returns the identity it proves. See the package
// documentation for what is and is not checked.
func (v *Verifier) Verify(ctx context.Context, ev attest.Evidence) (attest.Identity, error) {
	q, err := v.VerifyQuote(ctx, ev)
	if err != nil {
		return attest.Identity{}, err
	}
	return q.Identity(), nil
}

// VerifyQuote checks ev like Verify and returns all the quote's fields, for
// callers that want to show or judge more than the identity (the RTMRs, in
// particular).
func (v *Verifier) VerifyQuote(ctx context.Context, ev attest.Evidence) (*Quote, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tdx: %w", err)
	}
	if ev.TEE != attest.TDX {
		return nil, fmt.Errorf("%w: cannot verify %q evidence", ErrMalformed, ev.TEE)
	}
	if len(ev.Collateral) != 0 {
		return nil, fmt.Errorf("%w: TDX evidence carries no collateral, got %d bytes", ErrMalformed, len(ev.Collateral))
	}
	quote, err := parseQuote(ev.Data)
	if err != nil {
		return nil, err
	}

	roots := v.roots
	if roots == nil {
		// The zero Verifier.
		roots = x509.NewCertPool()
		roots.AppendCertsFromPEM(intelRootPEM)
	}
	now := time.Now()
	if v.now != nil {
		now = v.now()
	}
	opts := &verify.Options{
		GetCollateral:    false,
		CheckRevocations: false,
		Getter:           offlineGetter{},
		Now:              now,
		TrustedRoots:     roots,
	}
	if err := verify.TdxQuote(quote, opts); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrVerification, err)
	}
	if err := validate.TdxQuote(quote, &validate.Options{}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrVerification, err)
	}
	if err := v.checkPolicy(quote); err != nil {
		return nil, err
	}
	return quoteFromProto(quote), nil
}

// checkPolicy enforces the verifier's minimum TEE_TCB_SVN and expected
// registers on a quote that passed validation without them. Each is
// validated on its own, so that a failure is known to be that option's.
func (v *Verifier) checkPolicy(quote *pb.QuoteV4) error {
	var errs []error
	if v.minTCB != nil {
		opts := &validate.Options{TdQuoteBodyOptions: validate.TdQuoteBodyOptions{MinimumTeeTcbSvn: v.minTCB}}
		if err := validate.TdxQuote(quote, opts); err != nil {
			got := quote.GetTdQuoteBody().GetTeeTcbSvn()
			var low []string
			for i := range v.minTCB {
				if got[i] < v.minTCB[i] {
					low = append(low, fmt.Sprintf("byte %d is %d < %d", i, got[i], v.minTCB[i]))
				}
			}
			if low == nil {
				// The quote passed validation without the minimum, so
				// this should not happen.
				errs = append(errs, fmt.Errorf("%w: %v", ErrVerification, err))
			} else {
				errs = append(errs, fmt.Errorf("%w: TEE_TCB_SVN %x, minimum %x (%s)", ErrTCBTooLow, got, v.minTCB, strings.Join(low, ", ")))
			}
		}
	}
	if v.expect.Rtmrs != nil || v.expect.MrConfigID != nil || v.expect.MrOwner != nil {
		// go-tdx-guest names the field that differs and both values.
		if err := validate.TdxQuote(quote, &validate.Options{TdQuoteBodyOptions: v.expect}); err != nil {
			errs = append(errs, fmt.Errorf("%w: %v", ErrMismatch, err))
		}
	}
	return errors.Join(errs...)
}

// quoteFromProto copies the fields of a quote that passed abi.CheckQuoteV4,
// which guarantees their sizes.
func quoteFromProto(p *pb.QuoteV4) *Quote {
	body := p.GetTdQuoteBody()
	h := p.GetHeader()
	q := &Quote{
		MRTD:           bytes.Clone(body.GetMrTd()),
		MRConfigID:     bytes.Clone(body.GetMrConfigId()),
		MROwner:        bytes.Clone(body.GetMrOwner()),
		MROwnerConfig:  bytes.Clone(body.GetMrOwnerConfig()),
		TDAttributes:   binary.LittleEndian.Uint64(body.GetTdAttributes()),
		XFAM:           binary.LittleEndian.Uint64(body.GetXfam()),
		TEETCBSVN:      bytes.Clone(body.GetTeeTcbSvn()),
		MRSeam:         bytes.Clone(body.GetMrSeam()),
		MRSignerSeam:   bytes.Clone(body.GetMrSignerSeam()),
		SeamAttributes: bytes.Clone(body.GetSeamAttributes()),
		QESVN:          binary.LittleEndian.Uint16(h.GetQeSvn()),
		PCESVN:         binary.LittleEndian.Uint16(h.GetPceSvn()),
	}
	for i, r := range body.GetRtmrs() {
		if i < RTMRCount {
			q.RTMRs[i] = bytes.Clone(r)
		}
	}
	copy(q.ReportData[:], body.GetReportData())
	return q
}

// offlineGetter is handed to go-tdx-guest wherever it might fetch
// collateral or revocation lists, so that verification provably stays
// offline even if an option is misconfigured.
type offlineGetter struct{}

func (offlineGetter) Get(url string) (map[string][]string, []byte, error) {
	return nil, nil, fmt.Errorf("tdx: refusing to fetch %s: verification is offline", url)
}
