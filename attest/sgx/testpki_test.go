package sgx

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"slices"
	"testing"
	"time"
)

// The real quote and collateral (see testdata/README.md) are all valid at
// realTime.
var realTime = time.Unix(1671497404, 0)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func realQuote(t testing.TB) []byte { return readTestdata(t, "quote_v3_ecdsa_p256_pck_chain.bin") }

func realCollateral(t testing.TB) *Collateral {
	t.Helper()
	c, err := NewCollateral(
		readTestdata(t, "tcb_info_v3_fmspc_00606A000000.json"),
		readTestdata(t, "qe_identity_v2.json"),
		readTestdata(t, "tcb_info_v3_fmspc_00606A000000_certs.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testTime is when the synthetic hierarchy's certificates and collateral
// are valid.
var testTime = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// testPKI is a stand-in for Intel's hierarchy: a root, a PCK platform CA, a
// PCK certificate for a platform with the given SGX extension, and a TCB
// signing certificate. A Verifier built by verifier() pins its root.
type testPKI struct {
	root, pckCA, pck, tcbSigner             *x509.Certificate
	rootKey, pckCAKey, pckKey, tcbSignerKey *ecdsa.PrivateKey
	ext                                     pckExtension
}

var testFMSPC = [6]byte{0x00, 0x90, 0x6e, 0xa1, 0x00, 0x00}

// defaultExt is the platform of the synthetic PCK certificate.
func defaultExt() pckExtension {
	return pckExtension{
		FMSPC:   testFMSPC,
		PCEID:   [2]byte{0, 0},
		CompSVN: [16]byte{5, 5, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0},
		PCESVN:  11,
		CPUSVN:  [16]byte{5, 5, 2, 2, 3, 1, 0, 5},
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCert(t testing.TB, cn string, key *ecdsa.PrivateKey, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool, ext []pkix.Extension) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"conftrace test"}},
		NotBefore:             testTime.Add(-24 * time.Hour),
		NotAfter:              testTime.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  ca,
		ExtraExtensions:       ext,
	}
	if ca {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTestPKI(t testing.TB, ext pckExtension) *testPKI {
	t.Helper()
	p := &testPKI{ext: ext}
	p.rootKey, p.pckCAKey, p.pckKey, p.tcbSignerKey = newKey(t), newKey(t), newKey(t), newKey(t)
	p.root = newCert(t, "Intel SGX Root CA", p.rootKey, nil, nil, true, nil)
	p.pckCA = newCert(t, cnPlatformCA, p.pckCAKey, p.root, p.rootKey, true, nil)
	p.pck = newCert(t, cnPCKLeaf, p.pckKey, p.pckCA, p.pckCAKey, false,
		[]pkix.Extension{{Id: oidSGXExtension, Value: marshalPCKExtension(&ext)}})
	p.tcbSigner = newCert(t, cnTCBSigning, p.tcbSignerKey, p.root, p.rootKey, false, nil)
	return p
}

func (p *testPKI) verifier(opts VerifierOptions) *Verifier {
	if opts.Time.IsZero() {
		opts.Time = testTime
	}
	v := NewVerifier(opts)
	v.root = p.root
	return v
}

func pemChain(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

func signP256(t testing.TB, key *ecdsa.PrivateKey, msg []byte) [64]byte {
	t.Helper()
	h := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig
}

// testQE is the synthetic quoting enclave, matching testQEIdentity.
func testQE() ReportBody {
	var qe ReportBody
	qe.Attributes = Attributes{Flags: 0x15, XFRM: 0xe7}
	for i := range qe.MRSigner {
		qe.MRSigner[i] = 0x8c
	}
	qe.ISVProdID = 1
	qe.ISVSVN = 8
	return qe
}

// testReport is an enclave report body with recognizable fields.
func testReport() ReportBody {
	var r ReportBody
	r.Attributes = Attributes{Flags: 0x5, XFRM: 0x3}
	for i := range r.MREnclave {
		r.MREnclave[i] = byte(i)
		r.MRSigner[i] = byte(0xff - i)
	}
	r.ISVProdID = 7
	r.ISVSVN = 3
	copy(r.ReportData[:], "conftrace synthetic report data")
	return r
}

// quote builds a quote for report, attested by the quoting enclave qe and
// certified by the PCK chain chain (p's own chain when nil).
func (p *testPKI) quote(t testing.TB, report, qe ReportBody, chain []byte) []byte {
	t.Helper()
	ak := newKey(t)
	akBytes, err := ak.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	q := &Quote{
		Header:       Header{Version: 3, AttestationKeyType: 2, QESVN: qe.ISVSVN, PCESVN: p.ext.PCESVN},
		Report:       report,
		QEAuthData:   []byte("synthetic QE authentication data"),
		CertDataType: CertDataPCKChain,
		CertData:     chain,
	}
	if chain == nil {
		q.CertData = pemChain(p.pck, p.pckCA, p.root)
	}
	copy(q.Header.QEVendorID[:], "\x93\x9a\x72\x33\xf7\x9c\x4c\xa9\x94\x0a\x0d\xb3\x95\x7f\x06\x07")
	copy(q.AttestationKey[:], akBytes[1:])
	h := sha256.New()
	h.Write(q.AttestationKey[:])
	h.Write(q.QEAuthData)
	qe.ReportData = [64]byte{}
	copy(qe.ReportData[:], h.Sum(nil))
	q.QEReport = qe
	q.QEReportSignature = signP256(t, p.pckKey, qe.Marshal())
	q.Signature = signP256(t, ak, q.appendSigned(nil))
	return q.Marshal()
}

// platformLevelJSON is one TCB level of a synthetic TCB info.
type platformLevelJSON struct {
	comp   [16]int
	pceSVN int
	status string
}

// tcbInfoBody returns a TCB info v3 body for p's platform, valid around
// testTime.
func (p *testPKI) tcbInfoBody(levels ...platformLevelJSON) map[string]any {
	ls := make([]any, len(levels))
	for i, l := range levels {
		comps := make([]any, 16)
		for j, svn := range l.comp {
			comps[j] = map[string]any{"svn": svn}
		}
		ls[i] = map[string]any{
			"tcb":       map[string]any{"sgxtcbcomponents": comps, "pcesvn": l.pceSVN},
			"tcbDate":   "2029-01-01T00:00:00Z",
			"tcbStatus": l.status,
		}
	}
	return map[string]any{
		"id": "SGX", "version": 3,
		"issueDate":  testTime.Add(-time.Hour).Format(time.RFC3339),
		"nextUpdate": testTime.Add(30 * 24 * time.Hour).Format(time.RFC3339),
		"fmspc":      hex.EncodeToString(p.ext.FMSPC[:]),
		"pceId":      hex.EncodeToString(p.ext.PCEID[:]),
		"tcbType":    0, "tcbEvaluationDataNumber": 17,
		"tcbLevels": ls,
	}
}

// qeIdentityBody returns a QE identity v2 body matching testQE, with one
// TCB level per (isvsvn, status) pair.
func qeIdentityBody(levels ...any) map[string]any {
	ls := make([]any, 0, len(levels)/2)
	for i := 0; i+1 < len(levels); i += 2 {
		ls = append(ls, map[string]any{"tcb": map[string]any{"isvsvn": levels[i]}, "tcbDate": "2029-01-01T00:00:00Z", "tcbStatus": levels[i+1]})
	}
	return map[string]any{
		"id": "QE", "version": 2,
		"issueDate":               testTime.Add(-time.Hour).Format(time.RFC3339),
		"nextUpdate":              testTime.Add(30 * 24 * time.Hour).Format(time.RFC3339),
		"tcbEvaluationDataNumber": 17,
		"miscselect":              "00000000", "miscselectMask": "FFFFFFFF",
		"attributes": "11000000000000000000000000000000", "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
		"mrsigner":  "8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C8C",
		"isvprodid": 1,
		"tcbLevels": ls,
	}
}

// signDoc returns the PCS document {"<field>":body,"signature":"<hex>"}
// signed by key.
func signDoc(t testing.TB, key *ecdsa.PrivateKey, field string, body map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	sig := signP256(t, key, b)
	return fmt.Appendf(nil, `{"%s":%s,"signature":"%x"}`, field, b, sig[:])
}

func (p *testPKI) collateral(t testing.TB, tcbInfo, qeIdentity map[string]any) *Collateral {
	t.Helper()
	c, err := NewCollateral(
		signDoc(t, p.tcbSignerKey, "tcbInfo", tcbInfo),
		signDoc(t, p.tcbSignerKey, "enclaveIdentity", qeIdentity),
		pemChain(p.tcbSigner, p.root))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// crl returns a DER CRL issued by issuer listing the revoked certificates,
// valid from thisUpdate for a day.
func crl(t testing.TB, issuer *x509.Certificate, key *ecdsa.PrivateKey, thisUpdate time.Time, revoked ...*x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: thisUpdate,
		NextUpdate: thisUpdate.Add(24 * time.Hour),
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: thisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// marshalPCKExtension encodes x as the DER value of the SGX extension of a
// PCK certificate, with a PPID and SGX type as Intel's carry.
func marshalPCKExtension(x *pckExtension) []byte {
	entry := func(id asn1.ObjectIdentifier, v any) extEntry {
		b, err := asn1.Marshal(v)
		if err != nil {
			panic(err)
		}
		return extEntry{ID: id, Value: asn1.RawValue{FullBytes: b}}
	}
	sub := func(arc int) asn1.ObjectIdentifier { return slices.Concat(oidTCB, asn1.ObjectIdentifier{arc}) }
	tcb := make([]extEntry, 0, 18)
	for i, svn := range x.CompSVN {
		tcb = append(tcb, entry(sub(i+1), int(svn)))
	}
	tcb = append(tcb, entry(sub(arcPCESVN), int(x.PCESVN)), entry(sub(arcCPUSVN), x.CPUSVN[:]))
	top := []extEntry{
		entry(slices.Concat(oidSGXExtension, asn1.ObjectIdentifier{1}), make([]byte, 16)), // PPID
		entry(oidTCB, tcb),
		entry(oidPCEID, x.PCEID[:]),
		entry(oidFMSPC, x.FMSPC[:]),
		entry(slices.Concat(oidSGXExtension, asn1.ObjectIdentifier{5}), asn1.Enumerated(1)), // SGX type
	}
	b, err := asn1.Marshal(top)
	if err != nil {
		panic(err)
	}
	return b
}
