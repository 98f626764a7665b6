// Package snp verifies the evidence of a conftrace backend running in an AMD
// SEV-SNP confidential VM.
//
// An SEV-SNP attestation report is signed by the AMD secure processor of
// the machine the VM runs on, with a key that is unique to the chip and to
// its firmware versions (the VCEK) or, on some clouds, with a key AMD issued
// to the cloud provider (the VLEK). AMD certifies the VCEK or VLEK through
// an intermediate (ASK or ASVK) signed by the AMD root key (ARK) of the
// processor's product line (Milan, Genoa, Turin). The report states the
// VM's launch measurement, its guest policy (including whether the host may
// debug it) and 64 bytes of report data that the guest chose: conftrace
// puts there the hash of the key configuration and policy it serves.
//
// A [Verifier] checks such evidence offline and returns the
// [attest.Identity] it proves; [attest.Verify] then checks it against the
// caller's [attest.Expectations]:
//
//	v, err := snp.NewVerifier(snp.VerifierOptions{})
//	...
//	id, err := attest.Verify(ctx, ev, reportData, attest.Expectations{
//		Measurements: [][]byte{launchDigest},
//		HostData:     configHash,
//		// The lowest TCB (bootloader, TEE, SNP, microcode) that AMD's
//		// bulletins still consider safe.
//		MinSNPTCB: []byte{3, 0, 8, 115},
//	}, v)
//
// # Evidence format
//
// The Data of an [attest.Evidence] whose TEE is [attest.SNP] is the raw
// attestation report, exactly [ReportSize] bytes as the AMD secure
// processor returns it (SEV-SNP firmware ABI, "ATTESTATION_REPORT"),
// followed by the certificate table of the extended guest request (GHCB
// specification): 24-byte entries of a GUID, a little-endian 32-bit offset
// from the start of the table and a 32-bit length, ended by an all-zero
// entry, then the DER certificates the entries point to. This is exactly
// what Linux's configfs-tsm interface returns as outblob and auxblob, and
// what go-sev-guest's abi.ReportCertsToProto reads. The table must hold the
// VCEK (or VLEK) certificate that signed the report; it may hold the ASK
// and ARK, which are ignored in favour of the pinned ones. [NewEvidence]
// builds evidence in this format. The Collateral field is unused and must
// be empty.
//
// # What is checked
//
//   - The report is well formed (go-sev-guest's abi package) and says which
//     key signed it; unsigned reports are refused.
//   - The VCEK or VLEK certificate in the evidence chains to the AMD root of
//     the report's product line as go-sev-guest embeds it (or to the roots
//     in [VerifierOptions.Roots]), and all certificates are valid at the
//     verification time ([VerifierOptions.Now]). ASK and ARK certificates
//     carried in the evidence are never trusted.
//   - The report's ECDSA P-384 signature verifies with that certificate.
//   - The report is consistent with the certificate (go-sev-guest's validate
//     package): its reported TCB equals the TCB the certificate was issued
//     for, the committed TCB equals the current TCB (no provisional
//     firmware), and a non-zero CHIP_ID matches the VCEK's hardware ID.
//   - When [VerifierOptions.MinimumTCB] or [VerifierOptions.MinimumLaunchTCB]
//     is set, every component of the reported (or launch) TCB is at least
//     the minimum's (go-sev-guest's validate package); evidence below it
//     fails with [ErrTCBTooLow], naming the components that are too low.
//
// Verification never touches the network: certificate fetching from AMD's
// key distribution service is disabled and the HTTP getter handed to the
// library refuses every request. Evidence without its VCEK therefore fails
// with [ErrMissingCertificate]; the host must provision the certificates
// (for example with snphost or the cloud's equivalent) so that the guest's
// extended report carries them.
//
// # What is not checked
//
//   - Revocation: AMD's certificate revocation lists are not consulted.
//   - Whether the platform's TCB (firmware and microcode versions) is
//     current: AMD publishes no collateral saying which TCB is current that
//     could be checked offline, so the identity's TCBStatus is left empty.
//     Its PlatformTCB holds the reported TCB's four security patch levels,
//     which [attest.Expectations] compare with their MinSNPTCB, and refuse
//     as "not judged" when they have none; a conftrace client takes it from
//     the attested policy, which should name the lowest TCB that AMD's
//     security bulletins still consider safe, raised as bulletins appear.
//     The verifier itself accepts any TCB unless
//     [VerifierOptions.MinimumTCB] is set; [Report.TCB] shows the reported
//     TCB.
//   - The guest policy beyond its DEBUG bit, which becomes
//     [attest.Identity.Debug]: whether SMT or a migration agent are allowed
//     is visible in [Report.Policy] but not judged.
//   - The measurement itself. It covers only what the hypervisor loaded at
//     launch (firmware, and with measured direct boot the kernel, initrd and
//     command line); whether that stack pins the conftrace binary is for the
//     auditor who reproduces the measurement.
//   - FAMILY_ID, IMAGE_ID and the report ID, which are exposed in [Report]
//     but not judged. HOST_DATA and VMPL are in the identity, for
//     [attest.Expectations] to pin.
//
// The identity's Measurement is the 48-byte launch measurement, Signer is
// the digest of the ID key that signed the VM's ID block (nil when the VM
// was launched without one), SVN is the guest SVN (saturated at 65535) and
// ProductID is zero. A minimum guest SVN is set with
// [attest.Expectations.MinSVN].
package snp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

// ReportSize is the size in bytes of a raw SEV-SNP attestation report, the
// first part of SNP evidence.
const ReportSize = abi.ReportSize

// policyDebug is the DEBUG bit of the SEV-SNP guest policy: when set, the
// host may decrypt the guest's memory with the DBG_DECRYPT command.
const policyDebug = 1 << 19

var (
	// ErrMalformed is returned for evidence that cannot be decoded.
	ErrMalformed = errors.New("snp: malformed evidence")
	// ErrMissingCertificate is returned when the evidence lacks the VCEK or
	// VLEK certificate needed to check the report offline.
	ErrMissingCertificate = errors.New("snp: evidence lacks the certificate of the key that signed the report")
	// ErrVerification is returned when the evidence does not verify: a bad
	// signature, a certificate that does not chain to a trusted AMD root or
	// is not valid at the verification time, or a report inconsistent with
	// its certificate.
	ErrVerification = errors.New("snp: evidence does not verify")
	// ErrTCBTooLow is returned for evidence that verifies but whose reported
	// or launch TCB is below [VerifierOptions.MinimumTCB] or
	// [VerifierOptions.MinimumLaunchTCB] in at least one component: the
	// platform runs firmware or microcode older than the caller accepts.
	// It does not wrap [ErrVerification].
	ErrTCBTooLow = errors.New("snp: platform TCB is below the minimum")
)

// TCB is an SEV-SNP platform TCB version: the security patch levels (SPLs)
// of the platform's firmware and microcode, which AMD raises when it fixes
// a vulnerability. A report packs them into a 64-bit TCB_VERSION; the
// fields here follow the Milan and Genoa layout that go-sev-guest v0.15.0
// decodes (bootloader in byte 0, TEE in byte 1, SNP in byte 6, microcode
// in byte 7). TCBs are compared component by component: one is at least
// another if every one of its components is.
//
// Turin (Zen 5) packs its TCB_VERSION differently (a FMC level in byte 0,
// the others shifted), which go-sev-guest v0.15.0 does not know: on Turin
// the components decoded here are misnamed, and a minimum is compared with
// the wrong bytes except for Microcode.
type TCB struct {
	// Bootloader is BL_SPL, the level of the secure processor's bootloader.
	Bootloader uint8
	// TEE is TEE_SPL, the level of the secure processor's operating system.
	TEE uint8
	// SNP is SNP_SPL, the level of the SEV-SNP firmware.
	SNP uint8
	// Microcode is UCODE_SPL, the level of the CPU microcode.
	Microcode uint8
}

// String returns the TCB as "bl=B tee=T snp=S ucode=U", in decimal.
func (t TCB) String() string {
	return fmt.Sprintf("bl=%d tee=%d snp=%d ucode=%d", t.Bootloader, t.TEE, t.SNP, t.Microcode)
}

// splitTCB decodes a packed TCB_VERSION. The reserved bytes are dropped:
// they are zero on Milan and Genoa, and a minimum leaves them at zero.
func splitTCB(v uint64) TCB {
	p := kds.DecomposeTCBVersion(kds.TCBVersion(v))
	return TCB{Bootloader: p.BlSpl, TEE: p.TeeSpl, SNP: p.SnpSpl, Microcode: p.UcodeSpl}
}

func (t TCB) parts() kds.TCBParts {
	return kds.TCBParts{BlSpl: t.Bootloader, TeeSpl: t.TEE, SnpSpl: t.SNP, UcodeSpl: t.Microcode}
}

// below describes the components of t that are lower than min's, as
// "snp 5 < 6, ucode 68 < 70"; it is empty when t is at least min.
func (t TCB) below(min TCB) string {
	var low []string
	for _, c := range []struct {
		name      string
		got, want uint8
	}{
		{"bl", t.Bootloader, min.Bootloader},
		{"tee", t.TEE, min.TEE},
		{"snp", t.SNP, min.SNP},
		{"ucode", t.Microcode, min.Microcode},
	} {
		if c.got < c.want {
			low = append(low, fmt.Sprintf("%s %d < %d", c.name, c.got, c.want))
		}
	}
	return strings.Join(low, ", ")
}

// Report holds the fields of a verified SEV-SNP attestation report that an
// auditor or operator may want to see. Byte slices are copies.
type Report struct {
	// Version is the report format version (2, 3 or 5 at the time of
	// writing).
	Version uint32
	// GuestSVN is the security version number the VM's ID block declares.
	GuestSVN uint32
	// Policy is the guest policy the VM was launched with.
	Policy uint64
	// FamilyID and ImageID are the 16-byte identifiers from the ID block.
	FamilyID, ImageID []byte
	// VMPL is the virtual machine privilege level that requested the report.
	VMPL uint32
	// ReportData is the data the guest bound into the report.
	ReportData attest.ReportData
	// Measurement is the 48-byte launch measurement.
	Measurement []byte
	// HostData is 32 bytes the host chose at launch.
	HostData []byte
	// IDKeyDigest and AuthorKeyDigest are the SHA-384 digests of the keys
	// that signed the ID block and the ID key; all zeros without an ID block.
	IDKeyDigest, AuthorKeyDigest []byte
	// ReportID identifies the VM across migrations.
	ReportID []byte
	// ChipID is the 64-byte identifier of the chip (zero when masked).
	ChipID []byte
	// SigningKey is "VCEK" or "VLEK".
	SigningKey string
	// CurrentTCB, ReportedTCB, CommittedTCB and LaunchTCB are the platform
	// TCB versions (security versions of the bootloader, TEE, SNP firmware
	// and microcode, packed as the firmware ABI defines). [Report.TCB]
	// decodes ReportedTCB.
	CurrentTCB, ReportedTCB, CommittedTCB, LaunchTCB uint64
}

// TCB returns the reported TCB split into its components. It is the TCB
// the VCEK was issued for, and the one [VerifierOptions.MinimumTCB] is
// compared with.
func (r *Report) TCB() TCB { return splitTCB(r.ReportedTCB) }

// Debug reports whether the guest policy allows the host to debug the VM,
// that is, to read its memory.
func (r *Report) Debug() bool { return r.Policy&policyDebug != 0 }

// Identity returns the attestation identity the report proves: the launch
// measurement, HOST_DATA and VMPL for callers to pin, and the reported
// TCB's security patch levels (bootloader, TEE, SNP, microcode) as the
// platform's TCB.
func (r *Report) Identity() attest.Identity {
	tcb := r.TCB()
	id := attest.Identity{
		TEE:         attest.SNP,
		Measurement: bytes.Clone(r.Measurement),
		SVN:         uint16(min(r.GuestSVN, math.MaxUint16)),
		Debug:       r.Debug(),
		PlatformTCB: []byte{tcb.Bootloader, tcb.TEE, tcb.SNP, tcb.Microcode},
		HostData:    bytes.Clone(r.HostData),
		// The firmware reports VMPLs 0 to 3; saturate rather than wrap
		// anything else, which then matches no pinned VMPL.
		VMPL:       uint8(min(r.VMPL, math.MaxUint8)),
		ReportData: r.ReportData,
	}
	if slices.ContainsFunc(r.IDKeyDigest, func(b byte) bool { return b != 0 }) {
		id.Signer = bytes.Clone(r.IDKeyDigest)
	}
	return id
}

// VerifierOptions configure a [Verifier].
type VerifierOptions struct {
	// Now returns the time at which certificates must be valid; nil means
	// time.Now. Auditors re-checking old evidence set it.
	Now func() time.Time
	// Roots, when not nil, replaces the AMD certificates that go-sev-guest
	// embeds. It maps a product line ("Milan", "Genoa", "Turin") to PEM
	// bundles such as AMD's key distribution service serves at its
	// cert_chain endpoints: each holds the self-signed ARK and the ASK (the
	// VCEK intermediate) or ASVK (the VLEK intermediate) that it signed.
	// Tests use it to trust a fake AMD.
	Roots map[string][][]byte
	// MinimumTCB, when not zero, is the lowest acceptable reported TCB,
	// component by component: evidence from a platform whose bootloader,
	// TEE, SNP firmware or microcode is older fails with [ErrTCBTooLow].
	// The zero value accepts any TCB, because offline there is no AMD
	// collateral to say which TCB is current; deployments should set it
	// (see the package documentation).
	MinimumTCB TCB
	// MinimumLaunchTCB, when not zero, is the lowest acceptable TCB at the
	// time the VM was launched. Firmware can be updated under a running VM;
	// a VM launched on older firmware may have been exposed to its flaws
	// before the update.
	MinimumLaunchTCB TCB
}

// Verifier checks SEV-SNP evidence. It implements [attest.Verifier] for
// [attest.SNP]. The zero Verifier trusts AMD's roots as go-sev-guest embeds
// them and verifies at the current time.
type Verifier struct {
	now                  func() time.Time
	roots                map[string][]*trust.AMDRootCerts
	minTCB, minLaunchTCB TCB
}

var _ attest.Verifier = (*Verifier)(nil)

// NewVerifier returns a verifier configured by opts. It fails only if
// opts.Roots holds certificates that cannot be parsed or that do not
// form AMD chains.
func NewVerifier(opts VerifierOptions) (*Verifier, error) {
	bundles := opts.Roots
	if bundles == nil {
		bundles = productLines()
	}
	roots, err := parseRoots(bundles)
	if err != nil {
		return nil, err
	}
	return &Verifier{now: opts.Now, roots: roots, minTCB: opts.MinimumTCB, minLaunchTCB: opts.MinimumLaunchTCB}, nil
}

// TEE returns [attest.SNP].
func (v *Verifier) TEE() attest.TEE { return attest.SNP }

// Verify checks ev and returns the identity it proves. See the package
// documentation for what is and is not checked.
func (v *Verifier) Verify(ctx context.Context, ev attest.Evidence) (attest.Identity, error) {
	r, err := v.VerifyReport(ctx, ev)
	if err != nil {
		return attest.Identity{}, err
	}
	return r.Identity(), nil
}

// VerifyReport checks ev like Verify and returns all the report's fields,
// for callers that want to show or judge more than the identity.
func (v *Verifier) VerifyReport(ctx context.Context, ev attest.Evidence) (*Report, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("snp: %w", err)
	}
	if ev.TEE != attest.SNP {
		return nil, fmt.Errorf("%w: cannot verify %q evidence", ErrMalformed, ev.TEE)
	}
	if len(ev.Collateral) != 0 {
		return nil, fmt.Errorf("%w: SNP evidence carries no collateral, got %d bytes", ErrMalformed, len(ev.Collateral))
	}
	att, err := decodeEvidence(ev.Data)
	if err != nil {
		return nil, err
	}
	info, err := abi.ParseSignerInfo(att.Report.GetSignerInfo())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch info.SigningKey {
	case abi.VcekReportSigner:
		if len(att.CertificateChain.GetVcekCert()) == 0 {
			return nil, fmt.Errorf("%w: no VCEK certificate", ErrMissingCertificate)
		}
	case abi.VlekReportSigner:
		if len(att.CertificateChain.GetVlekCert()) == 0 {
			return nil, fmt.Errorf("%w: no VLEK certificate", ErrMissingCertificate)
		}
	default:
		return nil, fmt.Errorf("%w: report is not signed (signing key %v)", ErrVerification, info.SigningKey)
	}

	roots := v.roots
	if roots == nil {
		// The zero Verifier: parse the embedded roots afresh, so that no
		// root set is shared between verifiers.
		if roots, err = parseRoots(productLines()); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	if v.now != nil {
		now = v.now()
	}
	opts := &verify.Options{
		DisableCertFetching: true,
		Getter:              offlineGetter{},
		Now:                 now,
		TrustedRoots:        roots,
	}
	if err := verify.SnpAttestationContext(ctx, att, opts); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrVerification, err)
	}
	if err := validate.SnpAttestation(att, &validate.Options{GuestPolicy: permissivePolicy}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrVerification, err)
	}
	if err := v.checkMinimumTCB(att); err != nil {
		return nil, err
	}
	return reportFromProto(att.Report, info.SigningKey), nil
}

// permissivePolicy is the guest policy given to go-sev-guest's validate
// package: the most permissive one, since this package judges nothing about
// the policy but surfaces DEBUG in the identity.
var permissivePolicy = abi.SnpPolicy{SMT: true, MigrateMA: true, Debug: true, CXLAllowed: true}

// checkMinimumTCB enforces the verifier's minimum TCBs on a report that
// passed validation without them. Each minimum is validated on its own, so
// that a failure is known to be that minimum's.
func (v *Verifier) checkMinimumTCB(att *spb.Attestation) error {
	var errs []error
	for _, c := range []struct {
		name string
		min  TCB
		got  uint64
		set  func(*validate.Options, kds.TCBParts)
	}{
		{"reported", v.minTCB, att.Report.GetReportedTcb(), func(o *validate.Options, p kds.TCBParts) { o.MinimumTCB = p }},
		{"launch", v.minLaunchTCB, att.Report.GetLaunchTcb(), func(o *validate.Options, p kds.TCBParts) { o.MinimumLaunchTCB = p }},
	} {
		if c.min == (TCB{}) {
			continue
		}
		opts := &validate.Options{GuestPolicy: permissivePolicy}
		c.set(opts, c.min.parts())
		err := validate.SnpAttestation(att, opts)
		if err == nil {
			continue
		}
		got := splitTCB(c.got)
		low := got.below(c.min)
		if low == "" {
			// Not the minimum's fault; the report passed validation
			// without it, so this should not happen.
			errs = append(errs, fmt.Errorf("%w: %v", ErrVerification, err))
			continue
		}
		errs = append(errs, fmt.Errorf("%w: %s TCB %v, minimum %v (%s)", ErrTCBTooLow, c.name, got, c.min, low))
	}
	return errors.Join(errs...)
}

func reportFromProto(p *spb.Report, key abi.ReportSigner) *Report {
	r := &Report{
		Version:         p.GetVersion(),
		GuestSVN:        p.GetGuestSvn(),
		Policy:          p.GetPolicy(),
		FamilyID:        bytes.Clone(p.GetFamilyId()),
		ImageID:         bytes.Clone(p.GetImageId()),
		VMPL:            p.GetVmpl(),
		Measurement:     bytes.Clone(p.GetMeasurement()),
		HostData:        bytes.Clone(p.GetHostData()),
		IDKeyDigest:     bytes.Clone(p.GetIdKeyDigest()),
		AuthorKeyDigest: bytes.Clone(p.GetAuthorKeyDigest()),
		ReportID:        bytes.Clone(p.GetReportId()),
		ChipID:          bytes.Clone(p.GetChipId()),
		SigningKey:      key.String(),
		CurrentTCB:      p.GetCurrentTcb(),
		ReportedTCB:     p.GetReportedTcb(),
		CommittedTCB:    p.GetCommittedTcb(),
		LaunchTCB:       p.GetLaunchTcb(),
	}
	copy(r.ReportData[:], p.GetReportData())
	return r
}

// offlineGetter is handed to go-sev-guest wherever it might fetch
// certificates or revocation lists, so that verification provably stays
// offline even if an option is misconfigured.
type offlineGetter struct{}

func (offlineGetter) Get(url string) ([]byte, error) {
	return nil, fmt.Errorf("snp: refusing to fetch %s: verification is offline", url)
}

// productLines are the AMD product lines whose roots go-sev-guest embeds,
// with their VCEK and VLEK chains. Unlike the library's own default roots,
// conftrace also trusts the VLEK intermediates (ASVK), so that reports
// signed with a cloud provider's VLEK verify.
func productLines() map[string][][]byte {
	return map[string][][]byte{
		"Milan": {trust.AskArkMilanVcekBytes, trust.AskArkMilanVlekBytes},
		"Genoa": {trust.AskArkGenoaVcekBytes, trust.AskArkGenoaVlekBytes},
		"Turin": {trust.AskArkTurinVcekBytes, trust.AskArkTurinVlekBytes},
	}
}

// parseRoots turns PEM bundles of AMD certificates into go-sev-guest root
// sets, one per ARK, with the ASK (VCEK intermediate) and ASVK (VLEK
// intermediate) that the ARK signed. It decodes the PEM itself because some
// bundles that go-sev-guest embeds carry trailing bytes its own parser
// rejects.
func parseRoots(bundles map[string][][]byte) (map[string][]*trust.AMDRootCerts, error) {
	out := make(map[string][]*trust.AMDRootCerts, len(bundles))
	for line, pems := range bundles {
		var arks, intermediates []*x509.Certificate
		for i, b := range pems {
			n := 0
			for {
				var block *pem.Block
				block, b = pem.Decode(b)
				if block == nil {
					break
				}
				if block.Type != "CERTIFICATE" {
					continue
				}
				c, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					return nil, fmt.Errorf("snp: root bundle %d of %s: %w", i, line, err)
				}
				n++
				if bytes.Equal(c.RawSubject, c.RawIssuer) {
					arks = append(arks, c)
				} else {
					intermediates = append(intermediates, c)
				}
			}
			if n == 0 {
				return nil, fmt.Errorf("snp: root bundle %d of %s holds no certificate", i, line)
			}
		}
		if len(arks) == 0 {
			return nil, fmt.Errorf("snp: roots of %s hold no self-signed ARK", line)
		}
		sets := make([]*trust.AMDRootCerts, 0, len(arks))
		for _, ark := range arks {
			if slices.ContainsFunc(sets, func(s *trust.AMDRootCerts) bool { return s.ProductCerts.Ark.Equal(ark) }) {
				continue
			}
			set := trust.AMDRootCertsProduct(line)
			set.ProductCerts = &trust.ProductCerts{Ark: ark}
			sets = append(sets, set)
		}
		for _, ic := range intermediates {
			i := slices.IndexFunc(sets, func(s *trust.AMDRootCerts) bool { return ic.CheckSignatureFrom(s.ProductCerts.Ark) == nil })
			if i < 0 {
				return nil, fmt.Errorf("snp: roots of %s: %q is not signed by any of their ARKs", line, ic.Subject.CommonName)
			}
			if strings.HasPrefix(ic.Subject.CommonName, "SEV-VLEK") {
				sets[i].ProductCerts.Asvk = ic
			} else {
				sets[i].ProductCerts.Ask = ic
			}
		}
		out[line] = sets
	}
	return out, nil
}
