package sgx

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Collateral is what a verifier needs, besides the quote, to judge the
// platform's trusted computing base (TCB): Intel's signed statements of
// which TCB levels exist for the platform's FMSPC and which quoting enclave
// is genuine, as served by the Intel Provisioning Certification Service
// (PCS) or a caching service (PCCS).
//
// The documents are kept as the exact bytes Intel signed. In an
// [attest.Evidence] the collateral travels as the JSON of [Collateral.Marshal]:
//
//	{
//	  "tcb_info":          "<the TCB info response body, a JSON text>",
//	  "qe_identity":       "<the QE identity response body, a JSON text>",
//	  "tcb_signing_chain": "<PEM: Intel SGX TCB Signing, Intel SGX Root CA>",
//	  "pck_crl":           "<base64 DER, optional>",
//	  "root_ca_crl":       "<base64 DER, optional>"
//	}
type Collateral struct {
	// TCBInfo is the signed TCB info, version 3, for the platform's FMSPC:
	// the body of PCS's GET /sgx/certification/v4/tcb?fmspc=...,
	// {"tcbInfo":{...},"signature":"..."}.
	TCBInfo []byte
	// QEIdentity is the signed QE identity, version 2: the body of PCS's GET
	// /sgx/certification/v4/qe/identity, {"enclaveIdentity":{...},
	// "signature":"..."}.
	QEIdentity []byte
	// TCBSigningChain is the PEM chain that signs both documents: the
	// Intel SGX TCB Signing certificate, then the Intel SGX Root CA (PCS's
	// TCB-Info-Issuer-Chain and SGX-Enclave-Identity-Issuer-Chain headers).
	TCBSigningChain []byte
	// PCKCRL, when set, is the CRL (DER or PEM) of the PCK CA that issued
	// the quote's PCK certificate (PCS's GET /sgx/certification/v4/pckcrl
	// ?ca=platform or ?ca=processor). The PCK certificate must not be on it.
	PCKCRL []byte
	// RootCACRL, when set, is the Intel SGX Root CA's CRL (DER or PEM).
	// The PCK CA certificate must not be on it.
	RootCACRL []byte
}

// collateralJSON is the wire form of Collateral. The signed documents are
// JSON strings so that their bytes, which the signatures cover, survive
// encoding unchanged.
type collateralJSON struct {
	TCBInfo         string `json:"tcb_info"`
	QEIdentity      string `json:"qe_identity"`
	TCBSigningChain string `json:"tcb_signing_chain"`
	PCKCRL          []byte `json:"pck_crl,omitempty"`
	RootCACRL       []byte `json:"root_ca_crl,omitempty"`
}

// ReadCollateralDir reads collateral saved from Intel PCS into a directory:
// the TCB info (tcb_info*.json), the QE identity (qe_identity*.json) and the
// TCB signing chain (the one *.pem file), one of each, as an auditor keeps
// them beside a quote to verify it offline.
func ReadCollateralDir(dir string) (*Collateral, error) {
	one := func(pattern string) ([]byte, error) {
		m, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrCollateral, dir, err)
		}
		if len(m) != 1 {
			return nil, fmt.Errorf("%w: directory %s: want exactly one %s file, found %d", ErrCollateral, dir, pattern, len(m))
		}
		b, err := os.ReadFile(m[0])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCollateral, err)
		}
		return b, nil
	}
	tcb, err := one("tcb_info*.json")
	if err != nil {
		return nil, err
	}
	qe, err := one("qe_identity*.json")
	if err != nil {
		return nil, err
	}
	chain, err := one("*.pem")
	if err != nil {
		return nil, err
	}
	return NewCollateral(tcb, qe, chain)
}

// NewCollateral builds collateral from the files Intel PCS serves: the TCB
// info body, the QE identity body and the issuer chain. The chain may be PEM
// or the URL-encoded PEM of PCS's TCB-Info-Issuer-Chain header. It checks
// that the documents are well formed (not their signatures, which need a
// verification time: see [Verifier]). Set PCKCRL and RootCACRL on the result
// to have revocation checked.
func NewCollateral(tcbInfo, qeIdentity, tcbSigningChain []byte) (*Collateral, error) {
	chain := bytes.Clone(tcbSigningChain)
	// PEM never holds a '%'; PCS's header, "-----BEGIN%20CERTIFICATE...",
	// always does.
	if bytes.ContainsRune(chain, '%') {
		// PathUnescape, not QueryUnescape: base64 '+' may appear unescaped.
		s, err := url.PathUnescape(string(bytes.TrimSpace(chain)))
		if err != nil {
			return nil, fmt.Errorf("%w: TCB signing chain is neither PEM nor URL-encoded PEM: %w", ErrCollateral, err)
		}
		chain = []byte(s)
	}
	c := &Collateral{
		TCBInfo:         bytes.Clone(tcbInfo),
		QEIdentity:      bytes.Clone(qeIdentity),
		TCBSigningChain: chain,
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// ParseCollateral decodes collateral in the JSON form of [Collateral.Marshal]
// and checks that its documents are well formed.
func ParseCollateral(b []byte) (*Collateral, error) {
	var w collateralJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCollateral, err)
	}
	c := &Collateral{
		TCBInfo:         []byte(w.TCBInfo),
		QEIdentity:      []byte(w.QEIdentity),
		TCBSigningChain: []byte(w.TCBSigningChain),
		PCKCRL:          w.PCKCRL,
		RootCACRL:       w.RootCACRL,
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// Marshal returns the JSON form of c, for [attest.Evidence.Collateral].
func (c *Collateral) Marshal() ([]byte, error) {
	for _, d := range []struct {
		name string
		b    []byte
	}{{"TCB info", c.TCBInfo}, {"QE identity", c.QEIdentity}, {"TCB signing chain", c.TCBSigningChain}} {
		// JSON strings cannot carry invalid UTF-8 unchanged.
		if !utf8.Valid(d.b) {
			return nil, fmt.Errorf("%w: %s is not UTF-8", ErrCollateral, d.name)
		}
	}
	return json.Marshal(collateralJSON{
		TCBInfo:         string(c.TCBInfo),
		QEIdentity:      string(c.QEIdentity),
		TCBSigningChain: string(c.TCBSigningChain),
		PCKCRL:          c.PCKCRL,
		RootCACRL:       c.RootCACRL,
	})
}

// check reports whether the documents of c are well formed.
func (c *Collateral) check() error {
	if _, _, err := parseTCBInfo(c.TCBInfo); err != nil {
		return err
	}
	if _, _, err := parseQEIdentity(c.QEIdentity); err != nil {
		return err
	}
	if _, err := parseCertChain(c.TCBSigningChain); err != nil {
		return fmt.Errorf("%w: TCB signing chain: %w", ErrCollateral, err)
	}
	for _, d := range []struct {
		name string
		b    []byte
	}{{"PCK CRL", c.PCKCRL}, {"root CA CRL", c.RootCACRL}} {
		if len(d.b) == 0 {
			continue
		}
		if _, err := parseCRL(d.b); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCollateral, d.name, err)
		}
	}
	return nil
}

// signedDoc is a signed PCS document: the body, kept as the exact bytes
// that the signature covers, and the signature.
type signedDoc struct {
	body []byte
	sig  [64]byte // r || s
}

// parseSigned splits a PCS document {"<field>":{...},"signature":"<hex>"}.
func parseSigned(b []byte, field string) (signedDoc, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return signedDoc{}, err
	}
	body, ok := m[field]
	if !ok {
		return signedDoc{}, fmt.Errorf("no %q", field)
	}
	var sigHex string
	if err := json.Unmarshal(m["signature"], &sigHex); err != nil {
		return signedDoc{}, fmt.Errorf("signature: %w", err)
	}
	var d signedDoc
	if err := decodeHex(sigHex, d.sig[:]); err != nil {
		return signedDoc{}, fmt.Errorf("signature: %w", err)
	}
	d.body = body
	return d, nil
}

// verify checks the document's signature by pub.
func (d signedDoc) verify(pub *ecdsa.PublicKey) bool {
	return verifyP256(pub, d.body, d.sig[:])
}

// TCB statuses, as Intel names them.
const (
	statusUpToDate                          = "UpToDate"
	statusSWHardeningNeeded                 = "SWHardeningNeeded"
	statusConfigurationNeeded               = "ConfigurationNeeded"
	statusConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	statusOutOfDate                         = "OutOfDate"
	statusOutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	statusRevoked                           = "Revoked"
)

var knownStatuses = []string{
	statusUpToDate, statusSWHardeningNeeded, statusConfigurationNeeded,
	statusConfigurationAndSWHardeningNeeded, statusOutOfDate,
	statusOutOfDateConfigurationNeeded, statusRevoked,
}

// tcbInfo is the body of TCB info version 3 for SGX.
type tcbInfo struct {
	ID         string    `json:"id"`
	Version    int       `json:"version"`
	IssueDate  time.Time `json:"issueDate"`
	NextUpdate time.Time `json:"nextUpdate"`
	FMSPC      string    `json:"fmspc"`
	PCEID      string    `json:"pceId"`
	TCBType    int       `json:"tcbType"`
	TCBLevels  []struct {
		TCB struct {
			Components []struct {
				SVN int `json:"svn"`
			} `json:"sgxtcbcomponents"`
			PCESVN int `json:"pcesvn"`
		} `json:"tcb"`
		TCBStatus   string   `json:"tcbStatus"`
		AdvisoryIDs []string `json:"advisoryIDs"`
	} `json:"tcbLevels"`

	fmspc  [6]byte
	pceID  [2]byte
	levels []platformLevel
}

// platformLevel is one platform TCB level of a TCB info.
type platformLevel struct {
	comp       [16]int
	pceSVN     int
	status     string
	advisories []string
}

func parseTCBInfo(b []byte) (*tcbInfo, signedDoc, error) {
	d, err := parseSigned(b, "tcbInfo")
	if err != nil {
		return nil, d, fmt.Errorf("%w: TCB info: %w", ErrCollateral, err)
	}
	var ti tcbInfo
	if err := json.Unmarshal(d.body, &ti); err != nil {
		return nil, d, fmt.Errorf("%w: TCB info: %w", ErrCollateral, err)
	}
	if err := ti.validate(); err != nil {
		return nil, d, fmt.Errorf("%w: TCB info: %w", ErrCollateral, err)
	}
	return &ti, d, nil
}

func (ti *tcbInfo) validate() error {
	if ti.ID != "SGX" || ti.Version != 3 || ti.TCBType != 0 {
		return fmt.Errorf("id %q version %d TCB type %d, want SGX, 3 and 0", ti.ID, ti.Version, ti.TCBType)
	}
	if ti.IssueDate.IsZero() || ti.NextUpdate.IsZero() {
		return fmt.Errorf("missing issueDate or nextUpdate")
	}
	if err := decodeHex(ti.FMSPC, ti.fmspc[:]); err != nil {
		return fmt.Errorf("fmspc: %w", err)
	}
	if err := decodeHex(ti.PCEID, ti.pceID[:]); err != nil {
		return fmt.Errorf("pceId: %w", err)
	}
	if len(ti.TCBLevels) == 0 {
		return fmt.Errorf("no TCB levels")
	}
	ti.levels = make([]platformLevel, len(ti.TCBLevels))
	for i, l := range ti.TCBLevels {
		if len(l.TCB.Components) != 16 {
			return fmt.Errorf("TCB level %d has %d components, want 16", i, len(l.TCB.Components))
		}
		for j, c := range l.TCB.Components {
			if c.SVN < 0 || c.SVN > 0xff {
				return fmt.Errorf("TCB level %d component %d SVN %d out of range", i, j+1, c.SVN)
			}
			ti.levels[i].comp[j] = c.SVN
		}
		if l.TCB.PCESVN < 0 || l.TCB.PCESVN > 0xffff {
			return fmt.Errorf("TCB level %d PCESVN %d out of range", i, l.TCB.PCESVN)
		}
		if !slices.Contains(knownStatuses, l.TCBStatus) {
			return fmt.Errorf("TCB level %d has unknown status %q", i, l.TCBStatus)
		}
		if err := checkAdvisories(l.AdvisoryIDs); err != nil {
			return fmt.Errorf("TCB level %d: %w", i, err)
		}
		ti.levels[i].pceSVN = l.TCB.PCESVN
		ti.levels[i].status = l.TCBStatus
		ti.levels[i].advisories = l.AdvisoryIDs
	}
	return nil
}

// qeIdentity is the body of QE identity version 2.
type qeIdentity struct {
	ID             string    `json:"id"`
	Version        int       `json:"version"`
	IssueDate      time.Time `json:"issueDate"`
	NextUpdate     time.Time `json:"nextUpdate"`
	MiscSelect     string    `json:"miscselect"`
	MiscSelectMask string    `json:"miscselectMask"`
	Attributes     string    `json:"attributes"`
	AttributesMask string    `json:"attributesMask"`
	MRSigner       string    `json:"mrsigner"`
	ISVProdID      int       `json:"isvprodid"`
	TCBLevels      []qeLevel `json:"tcbLevels"`

	// The byte fields are in report body order: MISCSELECT and ATTRIBUTES
	// as the little-endian bytes of the report.
	miscSelect, miscSelectMask [4]byte
	attributes, attributesMask [16]byte
	mrSigner                   [32]byte
}

// qeLevel is one TCB level of a QE identity.
type qeLevel struct {
	TCB struct {
		ISVSVN int `json:"isvsvn"`
	} `json:"tcb"`
	TCBStatus   string   `json:"tcbStatus"`
	AdvisoryIDs []string `json:"advisoryIDs"`
}

func parseQEIdentity(b []byte) (*qeIdentity, signedDoc, error) {
	d, err := parseSigned(b, "enclaveIdentity")
	if err != nil {
		return nil, d, fmt.Errorf("%w: QE identity: %w", ErrCollateral, err)
	}
	var qi qeIdentity
	if err := json.Unmarshal(d.body, &qi); err != nil {
		return nil, d, fmt.Errorf("%w: QE identity: %w", ErrCollateral, err)
	}
	if err := qi.validate(); err != nil {
		return nil, d, fmt.Errorf("%w: QE identity: %w", ErrCollateral, err)
	}
	return &qi, d, nil
}

func (qi *qeIdentity) validate() error {
	if qi.ID != "QE" || qi.Version != 2 {
		return fmt.Errorf("id %q version %d, want QE and 2", qi.ID, qi.Version)
	}
	if qi.IssueDate.IsZero() || qi.NextUpdate.IsZero() {
		return fmt.Errorf("missing issueDate or nextUpdate")
	}
	for _, f := range []struct {
		name string
		hex  string
		dst  []byte
	}{
		{"miscselect", qi.MiscSelect, qi.miscSelect[:]},
		{"miscselectMask", qi.MiscSelectMask, qi.miscSelectMask[:]},
		{"attributes", qi.Attributes, qi.attributes[:]},
		{"attributesMask", qi.AttributesMask, qi.attributesMask[:]},
		{"mrsigner", qi.MRSigner, qi.mrSigner[:]},
	} {
		if err := decodeHex(f.hex, f.dst); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if qi.ISVProdID < 0 || qi.ISVProdID > 0xffff {
		return fmt.Errorf("isvprodid %d out of range", qi.ISVProdID)
	}
	if len(qi.TCBLevels) == 0 {
		return fmt.Errorf("no TCB levels")
	}
	for i, l := range qi.TCBLevels {
		if l.TCB.ISVSVN < 0 || l.TCB.ISVSVN > 0xffff {
			return fmt.Errorf("TCB level %d ISVSVN %d out of range", i, l.TCB.ISVSVN)
		}
		// Intel rates quoting enclaves with these three only.
		if !slices.Contains([]string{statusUpToDate, statusOutOfDate, statusRevoked}, l.TCBStatus) {
			return fmt.Errorf("TCB level %d has unknown status %q", i, l.TCBStatus)
		}
		if err := checkAdvisories(l.AdvisoryIDs); err != nil {
			return fmt.Errorf("TCB level %d: %w", i, err)
		}
	}
	return nil
}

// maxAdvisories bounds the advisory IDs of one TCB level; Intel's levels
// name a few dozen at most.
const maxAdvisories = 256

// checkAdvisories checks a TCB level's advisory IDs, which reach clients'
// error messages and outputs: a bounded number of short printable names.
func checkAdvisories(ids []string) error {
	if len(ids) > maxAdvisories {
		return fmt.Errorf("%d advisory IDs, more than %d", len(ids), maxAdvisories)
	}
	for _, id := range ids {
		if id == "" || len(id) > 64 || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) {
			return fmt.Errorf("advisory ID %q is not 1 to 64 printable ASCII characters", id)
		}
	}
	return nil
}

// parseCRL decodes a DER or PEM ("X509 CRL") certificate revocation list.
func parseCRL(b []byte) (*x509.RevocationList, error) {
	if p, _ := pem.Decode(b); p != nil {
		if p.Type != "X509 CRL" {
			return nil, fmt.Errorf("unexpected PEM block %q", p.Type)
		}
		b = p.Bytes
	}
	return x509.ParseRevocationList(b)
}

// decodeHex decodes exactly len(dst) bytes of hex (either case) into dst.
func decodeHex(s string, dst []byte) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("%d hex digits, want %d", len(s), 2*len(dst))
	}
	_, err := hex.Decode(dst, []byte(s))
	return err
}

// verifyP256 checks an ECDSA-P256 signature sig (r || s, 64 bytes) over
// SHA-256(msg).
func verifyP256(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	h := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}
