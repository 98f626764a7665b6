package sgx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/conftrace/conftrace/attest"
)

// VerifierOptions configure a [Verifier]. The zero value verifies at the
// current time and judges the TCB only when the evidence carries collateral.
type VerifierOptions struct {
	// Time is when certificates and collateral must be valid. Zero means
	// the time of each Verify call.
	Time time.Time
	// Collateral is used for evidence that carries none. It must be for the
	// platform (FMSPC) that produced the quote.
	Collateral *Collateral
	// RequireCollateral refuses evidence when no collateral is available,
	// with an error wrapping [ErrNoCollateral]. Without it such evidence
	// verifies with an empty TCB status, which [attest.Expectations] refuse
	// unless they allow an unjudged TCB.
	RequireCollateral bool
}

// Verifier checks SGX DCAP quotes. It implements [attest.Verifier] for
// [attest.SGX]. The zero Verifier is ready to use; see [VerifierOptions]. A
// Verifier is safe for concurrent use.
type Verifier struct {
	opts VerifierOptions
	// root replaces the pinned Intel SGX Root CA when not nil. Only this
	// package's tests set it, to check quotes from a test hierarchy.
	root *x509.Certificate
}

var _ attest.Verifier = (*Verifier)(nil)

// NewVerifier returns a verifier configured by opts.
func NewVerifier(opts VerifierOptions) *Verifier {
	return &Verifier{opts: opts}
}

// TEE returns [attest.SGX].
func (v *Verifier) TEE() attest.TEE { return attest.SGX }

// Verify checks the quote in ev.Data, in the order the package
// documentation gives, and returns the identity it proves: Measurement is
// MRENCLAVE, Signer MRSIGNER, ProductID ISVPRODID, SVN ISVSVN, Debug the
// DEBUG attribute, ReportData the report data, and TCBStatus and
// TCBAdvisoryIDs the platform's TCB status and advisories when collateral
// was available (ev.Collateral, in the form of [Collateral.Marshal], or else
// [VerifierOptions.Collateral]).
//
// The TCB status combines the platform's level (from the TCB info) with the
// quoting enclave's (from the QE identity) as Intel's quote verification
// library does: a QE that is OutOfDate turns an UpToDate or
// SWHardeningNeeded platform into OutOfDate, and a ConfigurationNeeded or
// ConfigurationAndSWHardeningNeeded platform into
// OutOfDateConfigurationNeeded; a Revoked QE or platform is refused with
// [ErrRevoked]; otherwise the platform's status stands.
func (v *Verifier) Verify(ctx context.Context, ev attest.Evidence) (attest.Identity, error) {
	if err := ctx.Err(); err != nil {
		return attest.Identity{}, err
	}
	if ev.TEE != attest.SGX {
		return attest.Identity{}, fmt.Errorf("sgx: cannot verify %q evidence", ev.TEE)
	}
	q, err := ParseQuote(ev.Data)
	if err != nil {
		return attest.Identity{}, err
	}
	var opts VerifierOptions
	root := intelRoot()
	if v != nil {
		opts = v.opts
		if v.root != nil {
			root = v.root
		}
	}
	col := opts.Collateral
	if len(ev.Collateral) > 0 {
		if col, err = ParseCollateral(ev.Collateral); err != nil {
			return attest.Identity{}, err
		}
	}
	if col == nil && opts.RequireCollateral {
		return attest.Identity{}, ErrNoCollateral
	}
	t := opts.Time
	if t.IsZero() {
		t = time.Now()
	}

	pck, err := verifyQuote(q, root, t)
	if err != nil {
		return attest.Identity{}, err
	}
	id := attest.Identity{
		TEE:         attest.SGX,
		Measurement: bytes.Clone(q.Report.MREnclave[:]),
		Signer:      bytes.Clone(q.Report.MRSigner[:]),
		ProductID:   q.Report.ISVProdID,
		SVN:         q.Report.ISVSVN,
		Debug:       q.Report.Debug(),
		ReportData:  q.Report.ReportData,
	}
	if col != nil {
		if id.TCBStatus, id.TCBAdvisoryIDs, err = judgeTCB(col, q, pck, root, t); err != nil {
			return attest.Identity{}, err
		}
	}
	return id, nil
}

// verifyQuote checks the PCK chain, the QE report and the quote signature
// (steps 2 to 5 of the package documentation). It returns the PCK chain.
func verifyQuote(q *Quote, root *x509.Certificate, t time.Time) ([]*x509.Certificate, error) {
	certs, err := parseCertChain(q.CertData)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPCKChain, err)
	}
	pckKey, err := verifyChain(certs, root, t, cnPCKLeaf, cnPlatformCA, cnProcessorCA)
	if err != nil {
		if errors.Is(err, ErrUntrustedRoot) {
			return nil, fmt.Errorf("sgx: PCK chain: %w", err)
		}
		return nil, fmt.Errorf("%w: %w", ErrPCKChain, err)
	}
	if !verifyP256(pckKey, q.QEReport.Marshal(), q.QEReportSignature[:]) {
		return nil, ErrQEReportSignature
	}
	h := sha256.New()
	h.Write(q.AttestationKey[:])
	h.Write(q.QEAuthData)
	want := h.Sum(make([]byte, 0, 64))
	want = append(want, make([]byte, 32)...)
	if !bytes.Equal(q.QEReport.ReportData[:], want) {
		return nil, fmt.Errorf("%w: QE report data %x, want %x", ErrQEReportData, q.QEReport.ReportData[:], want)
	}
	ak, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, q.AttestationKey[:]...))
	if err != nil {
		return nil, fmt.Errorf("%w: attestation key: %w", ErrQuoteSignature, err)
	}
	if !verifyP256(ak, q.appendSigned(make([]byte, 0, signedSize)), q.Signature[:]) {
		return nil, ErrQuoteSignature
	}
	return certs, nil
}

// judgeTCB checks the collateral and returns the combined TCB status and
// the advisories of the platform's and the quoting enclave's TCB levels,
// sorted (step 6 of the package documentation). pck is the verified PCK
// chain.
func judgeTCB(c *Collateral, q *Quote, pck []*x509.Certificate, root *x509.Certificate, t time.Time) (string, []string, error) {
	ti, qi, err := checkCollateral(c, pck, root, t)
	if err != nil {
		return "", nil, err
	}
	qeLevel, err := qeTCBLevel(qi, &q.QEReport)
	if err != nil {
		return "", nil, err
	}
	ext, err := pckExtensionOf(pck[0])
	if err != nil {
		return "", nil, err
	}
	if ext.FMSPC != ti.fmspc || ext.PCEID != ti.pceID {
		return "", nil, fmt.Errorf("%w: PCK certificate has FMSPC %x PCE ID %x, TCB info is for %x and %x",
			ErrPlatformMismatch, ext.FMSPC, ext.PCEID, ti.fmspc, ti.pceID)
	}
	plat, err := platformTCBLevel(ti, ext)
	if err != nil {
		return "", nil, err
	}
	status := convergeStatus(plat.status, qeLevel.TCBStatus)
	if status == statusRevoked {
		return "", nil, fmt.Errorf("%w: TCB status Revoked (platform %s, quoting enclave %s)", ErrRevoked, plat.status, qeLevel.TCBStatus)
	}
	// Both levels' advisories, as Intel's quote verification library
	// reports them: the platform's status may stand while the QE's
	// advisories still apply.
	advisories := slices.Concat(plat.advisories, qeLevel.AdvisoryIDs)
	slices.Sort(advisories)
	return status, slices.Compact(advisories), nil
}

// checkCollateral checks the collateral's signatures, validity dates and
// CRLs, and returns its TCB info and QE identity.
func checkCollateral(c *Collateral, pck []*x509.Certificate, root *x509.Certificate, t time.Time) (*tcbInfo, *qeIdentity, error) {
	signers, err := parseCertChain(c.TCBSigningChain)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: TCB signing chain: %w", ErrCollateral, err)
	}
	signKey, err := verifyChain(signers, root, t, cnTCBSigning)
	if err != nil {
		if errors.Is(err, ErrUntrustedRoot) {
			return nil, nil, fmt.Errorf("sgx: TCB signing chain: %w", err)
		}
		return nil, nil, fmt.Errorf("%w: TCB signing chain: %w", ErrCollateralSignature, err)
	}
	ti, tiDoc, err := parseTCBInfo(c.TCBInfo)
	if err != nil {
		return nil, nil, err
	}
	if !tiDoc.verify(signKey) {
		return nil, nil, fmt.Errorf("%w: TCB info", ErrCollateralSignature)
	}
	qi, qiDoc, err := parseQEIdentity(c.QEIdentity)
	if err != nil {
		return nil, nil, err
	}
	if !qiDoc.verify(signKey) {
		return nil, nil, fmt.Errorf("%w: QE identity", ErrCollateralSignature)
	}
	if err := checkPeriod("TCB info", ti.IssueDate, ti.NextUpdate, t); err != nil {
		return nil, nil, err
	}
	if err := checkPeriod("QE identity", qi.IssueDate, qi.NextUpdate, t); err != nil {
		return nil, nil, err
	}
	if err := checkCRLs(c, pck, t); err != nil {
		return nil, nil, err
	}
	return ti, qi, nil
}

func checkPeriod(what string, issued, next, t time.Time) error {
	if t.Before(issued) {
		return fmt.Errorf("%w: %s issued %s, after %s", ErrCollateralExpired, what, issued.Format(time.RFC3339), t.Format(time.RFC3339))
	}
	if t.After(next) {
		return fmt.Errorf("%w: %s was due for update at %s, before %s", ErrCollateralExpired, what, next.Format(time.RFC3339), t.Format(time.RFC3339))
	}
	return nil
}

// checkCRLs checks the optional CRLs: the PCK CA's against the PCK
// certificate, the root CA's against the PCK CA certificate.
func checkCRLs(c *Collateral, pck []*x509.Certificate, t time.Time) error {
	for _, x := range []struct {
		name     string
		der      []byte
		issuer   *x509.Certificate
		subject  *x509.Certificate
		certName string
	}{
		{"PCK CRL", c.PCKCRL, pck[1], pck[0], "PCK certificate"},
		{"root CA CRL", c.RootCACRL, pck[2], pck[1], "PCK CA certificate"},
	} {
		if len(x.der) == 0 {
			continue
		}
		crl, err := parseCRL(x.der)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCollateral, x.name, err)
		}
		if err := crl.CheckSignatureFrom(x.issuer); err != nil {
			return fmt.Errorf("%w: %s is not signed by %q: %w", ErrCollateralSignature, x.name, x.issuer.Subject.CommonName, err)
		}
		if t.Before(crl.ThisUpdate) || (!crl.NextUpdate.IsZero() && t.After(crl.NextUpdate)) {
			return fmt.Errorf("%w: %s valid from %s to %s", ErrCollateralExpired, x.name,
				crl.ThisUpdate.Format(time.RFC3339), crl.NextUpdate.Format(time.RFC3339))
		}
		for _, r := range crl.RevokedCertificateEntries {
			if r.SerialNumber.Cmp(x.subject.SerialNumber) == 0 {
				return fmt.Errorf("%w: %s serial %x is on the %s", ErrRevoked, x.certName, x.subject.SerialNumber, x.name)
			}
		}
	}
	return nil
}

// qeTCBLevel matches the QE report against the QE identity and returns the
// first TCB level whose ISVSVN the QE reaches.
func qeTCBLevel(qi *qeIdentity, qe *ReportBody) (qeLevel, error) {
	if qe.MRSigner != qi.mrSigner {
		return qeLevel{}, fmt.Errorf("%w: MRSIGNER %x, want %x", ErrQEIdentity, qe.MRSigner[:], qi.mrSigner[:])
	}
	if int(qe.ISVProdID) != qi.ISVProdID {
		return qeLevel{}, fmt.Errorf("%w: ISVPRODID %d, want %d", ErrQEIdentity, qe.ISVProdID, qi.ISVProdID)
	}
	body := qe.Marshal()
	if !maskedEqual(body[16:20], qi.miscSelectMask[:], qi.miscSelect[:]) {
		return qeLevel{}, fmt.Errorf("%w: MISCSELECT %x under mask %x, want %x", ErrQEIdentity, body[16:20], qi.miscSelectMask[:], qi.miscSelect[:])
	}
	if !maskedEqual(body[48:64], qi.attributesMask[:], qi.attributes[:]) {
		return qeLevel{}, fmt.Errorf("%w: ATTRIBUTES %x under mask %x, want %x", ErrQEIdentity, body[48:64], qi.attributesMask[:], qi.attributes[:])
	}
	for _, l := range qi.TCBLevels {
		if int(qe.ISVSVN) >= l.TCB.ISVSVN {
			return l, nil
		}
	}
	return qeLevel{}, fmt.Errorf("%w: quoting enclave ISVSVN %d is below every level", ErrTCBLevel, qe.ISVSVN)
}

func maskedEqual(value, mask, want []byte) bool {
	for i := range value {
		if value[i]&mask[i] != want[i] {
			return false
		}
	}
	return true
}

// platformTCBLevel returns the first TCB level whose 16 component SVNs and
// PCESVN the PCK certificate's all reach (Intel's algorithm for TCB info
// v3).
func platformTCBLevel(ti *tcbInfo, ext *pckExtension) (platformLevel, error) {
next:
	for _, l := range ti.levels {
		for i, svn := range l.comp {
			if int(ext.CompSVN[i]) < svn {
				continue next
			}
		}
		if int(ext.PCESVN) >= l.pceSVN {
			return l, nil
		}
	}
	return platformLevel{}, fmt.Errorf("%w: platform with component SVNs %s and PCESVN %d is below every level",
		ErrTCBLevel, hex.EncodeToString(ext.CompSVN[:]), ext.PCESVN)
}

// convergeStatus combines the platform's and the quoting enclave's TCB
// statuses as Intel's quote verification library does.
func convergeStatus(platform, qe string) string {
	switch qe {
	case statusRevoked:
		return statusRevoked
	case statusOutOfDate:
		switch platform {
		case statusUpToDate, statusSWHardeningNeeded:
			return statusOutOfDate
		case statusConfigurationNeeded, statusConfigurationAndSWHardeningNeeded:
			return statusOutOfDateConfigurationNeeded
		}
	}
	return platform
}
