package tdx

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// oidSGXExtensions is Intel's SGX extension of PCK certificates (FMSPC,
// TCB levels, PCE ID), which go-tdx-guest requires to be present.
var oidSGXExtensions = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}

// fakeIntel is a test-only Intel: a root CA, a PCK platform CA and a PCK
// certificate named like Intel's, with keys made by the test, so that it can
// sign TDX quotes of the test's choosing (for instance a debuggable TD).
// go-tdx-guest ships no such fake, only a pre-recorded real quote.
type fakeIntel struct {
	rootPEM  []byte
	chainPEM []byte
	pckKey   *ecdsa.PrivateKey
}

func newFakeIntel(t *testing.T, real *pb.QuoteV4) *fakeIntel {
	t.Helper()
	// The PCK certificate must carry the SGX extension; copy the real one's.
	realChain := real.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	block, _ := pem.Decode(realChain)
	realPCK, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var sgxExt []pkix.Extension
	for _, e := range realPCK.Extensions {
		if e.Id.Equal(oidSGXExtensions) {
			sgxExt = append(sgxExt, e)
		}
	}
	if len(sgxExt) != 1 {
		t.Fatalf("real PCK certificate has %d SGX extensions", len(sgxExt))
	}

	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	rootKey, caKey, pckKey := key(), key(), key()
	notBefore, notAfter := realTime.Add(-24*time.Hour), realTime.Add(10*365*24*time.Hour)
	tmpl := func(serial int64, cn string, ca bool) *x509.Certificate {
		c := &x509.Certificate{
			SerialNumber:          big.NewInt(serial),
			Subject:               pkix.Name{CommonName: cn, Organization: []string{"Not Intel (conftrace test)"}},
			NotBefore:             notBefore,
			NotAfter:              notAfter,
			SignatureAlgorithm:    x509.ECDSAWithSHA256,
			BasicConstraintsValid: true,
			IsCA:                  ca,
			KeyUsage:              x509.KeyUsageDigitalSignature,
		}
		if ca {
			c.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		}
		return c
	}
	create := func(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, priv *ecdsa.PrivateKey) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootT := tmpl(1, "Intel SGX Root CA", true)
	root := create(rootT, rootT, &rootKey.PublicKey, rootKey)
	ca := create(tmpl(2, "Intel SGX PCK Platform CA", true), root, &caKey.PublicKey, rootKey)
	pckT := tmpl(3, "Intel SGX PCK Certificate", false)
	// go-tdx-guest insists on the six extensions of a real PCK certificate.
	pckT.ExtraExtensions = sgxExt
	pckT.SubjectKeyId = []byte{1, 2, 3, 4}
	pckT.CRLDistributionPoints = []string{"https://example.invalid/pckcrl"}
	pck := create(pckT, ca, &pckKey.PublicKey, caKey)

	enc := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	f := &fakeIntel{rootPEM: enc(root), pckKey: pckKey}
	f.chainPEM = append(append(enc(pck), enc(ca)...), f.rootPEM...)
	return f
}

// quote returns a copy of base re-signed by the fake Intel, with the given
// report data and the DEBUG attribute set or cleared.
func (f *fakeIntel) quote(t *testing.T, base []byte, reportData attest.ReportData, debug bool) []byte {
	t.Helper()
	parsed, err := abi.QuoteToProto(base)
	if err != nil {
		t.Fatal(err)
	}
	q := parsed.(*pb.QuoteV4)
	body := q.GetTdQuoteBody()
	body.ReportData = reportData[:]
	attrs := binary.LittleEndian.Uint64(body.GetTdAttributes())
	if debug {
		attrs |= tdAttributesDebug
	} else {
		attrs &^= tdAttributesDebug
	}
	body.TdAttributes = binary.LittleEndian.AppendUint64(nil, attrs)

	// A fresh attestation key, certified by a QE report signed with the PCK key.
	attKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := attKey.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	sd := q.GetSignedData()
	sd.EcdsaAttestationKey = pub[1:]
	qe := sd.GetCertificationData().GetQeReportCertificationData()
	binding := sha256.Sum256(append(append([]byte{}, sd.EcdsaAttestationKey...), qe.GetQeAuthData().GetData()...))
	qe.QeReport.ReportData = append(binding[:], make([]byte, 32)...)
	rawQE, err := abi.EnclaveReportToAbiBytes(qe.GetQeReport())
	if err != nil {
		t.Fatal(err)
	}
	qe.QeReportSignature = signRaw(t, f.pckKey, rawQE)

	chain := qe.GetPckCertificateChainData()
	chain.PckCertChain = f.chainPEM
	chain.Size = uint32(len(f.chainPEM))
	// QE report, its signature, the auth data with its size, and the chain
	// with its type and size.
	cd := sd.GetCertificationData()
	cd.Size = uint32(0x180+0x40+2+len(qe.GetQeAuthData().GetData())+6) + chain.Size
	q.SignedDataSize = 0x40 + 0x40 + 6 + cd.Size

	header, err := abi.HeaderToAbiBytes(q.GetHeader())
	if err != nil {
		t.Fatal(err)
	}
	rawBody, err := abi.TdQuoteBodyToAbiBytes(body)
	if err != nil {
		t.Fatal(err)
	}
	sd.Signature = signRaw(t, attKey, append(header, rawBody...))
	out, err := abi.QuoteToAbiBytes(q)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// signRaw signs SHA-256(msg) and returns r || s, 32 bytes each, as quotes
// encode ECDSA signatures.
func signRaw(t *testing.T, k *ecdsa.PrivateKey, msg []byte) []byte {
	t.Helper()
	h := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out
}
