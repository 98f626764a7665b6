package sgx

import (
	"encoding/binary"
	"fmt"
)

// Quote format constants (Intel SGX ECDSA Quote Library API, quote v3).
const (
	// QuoteVersion is the only quote version this package reads.
	QuoteVersion = 3
	// AttestationKeyECDSAP256 is the attestation key type of ECDSA-P256 quotes.
	AttestationKeyECDSAP256 = 2
	// TEETypeSGX is the TEE type of SGX enclave quotes.
	TEETypeSGX = 0
	// CertDataPCKChain is the certification data type of a PEM PCK
	// certificate chain (leaf, intermediate CA, root CA), the only type this
	// package accepts.
	CertDataPCKChain = 5

	// HeaderSize is the size of the quote header.
	HeaderSize = 48
	// ReportBodySize is the size of an SGX report body (ISV or QE).
	ReportBodySize = 384

	// FlagDebug is the DEBUG bit of [Attributes.Flags]: the enclave's memory
	// can be read and changed by a debugger on the host.
	FlagDebug = 0x2

	sigLenSize    = 4
	signedSize    = HeaderSize + ReportBodySize // what the attestation key signs
	sigDataOffset = signedSize + sigLenSize
	ecdsaSigSize  = 64
	ecdsaKeySize  = 64
	// fixedSigData is the signature data up to and including the QE
	// authentication data length.
	fixedSigData = ecdsaSigSize + ecdsaKeySize + ReportBodySize + ecdsaSigSize + 2
)

// Header is the quote header.
type Header struct {
	Version            uint16 // QuoteVersion
	AttestationKeyType uint16 // AttestationKeyECDSAP256
	TEEType            uint32 // TEETypeSGX (reserved in v3, always zero)
	QESVN              uint16 // security version of the quoting enclave
	PCESVN             uint16 // security version of the provisioning certification enclave
	QEVendorID         [16]byte
	UserData           [20]byte // chosen by the quoting enclave
}

// Attributes are an enclave's SGX attributes.
type Attributes struct {
	Flags uint64 // INIT, DEBUG (FlagDebug), MODE64BIT, ...
	XFRM  uint64 // the extended CPU features the enclave may use
}

// ReportBody is an SGX report body: the identity of an enclave as measured
// by the CPU. A quote holds two: the enclave's own (the ISV report) and the
// quoting enclave's.
type ReportBody struct {
	CPUSVN       [16]byte
	MiscSelect   uint32
	ISVExtProdID [16]byte
	Attributes   Attributes
	MREnclave    [32]byte // the measurement of the enclave's code and initial data
	MRSigner     [32]byte // the SHA-256 of the enclave signer's public key
	ConfigID     [64]byte
	ISVProdID    uint16
	ISVSVN       uint16
	ConfigSVN    uint16
	ISVFamilyID  [16]byte
	ReportData   [64]byte // chosen by the enclave

	// Reserved bytes are kept so that a parsed body encodes back to the
	// exact bytes the signatures cover.
	reserved1 [12]byte
	reserved2 [32]byte
	reserved3 [32]byte
	reserved4 [42]byte
}

// Quote is an SGX DCAP quote, version 3, with an ECDSA-P256 attestation key
// and a PEM PCK certificate chain as certification data.
//
// A parsed Quote is not verified: use a [Verifier].
type Quote struct {
	Header Header
	// Report is the report body of the enclave being attested.
	Report ReportBody
	// Signature is the ECDSA-P256 signature (r || s, big-endian) by the
	// attestation key over the header and Report.
	Signature [64]byte
	// AttestationKey is the quoting enclave's ECDSA-P256 public key
	// (x || y, big-endian).
	AttestationKey [64]byte
	// QEReport is the report body of the quoting enclave, whose report
	// data binds AttestationKey and QEAuthData.
	QEReport ReportBody
	// QEReportSignature is the ECDSA-P256 signature (r || s) by the PCK
	// key over QEReport.
	QEReportSignature [64]byte
	// QEAuthData is the quoting enclave's authentication data.
	QEAuthData []byte
	// CertDataType is the certification data type, [CertDataPCKChain].
	CertDataType uint16
	// CertData is the certification data: the PEM PCK certificate chain.
	CertData []byte
}

// ParseQuote decodes an SGX DCAP quote, version 3. It checks the format
// only, not any signature. Errors wrap [ErrTruncated], [ErrVersion],
// [ErrKeyType], [ErrTEEType], [ErrLength] or [ErrCertDataType].
//
// The layout, all integers little-endian:
//
//	offset  size  field
//	     0    48  header: version, key type, TEE type, QE SVN, PCE SVN,
//	              QE vendor ID, user data
//	    48   384  ISV enclave report body
//	   432     4  signature data length n; the quote is 436+n bytes
//	   436    64  quote signature
//	   500    64  attestation public key
//	   564   384  QE report body
//	   948    64  QE report signature
//	  1012     2  QE authentication data length a, then a bytes
//	              certification data type (2), length c (4), then c bytes
func ParseQuote(b []byte) (*Quote, error) {
	if len(b) < sigDataOffset {
		return nil, fmt.Errorf("%w: %d bytes, the header, report body and signature length take %d", ErrTruncated, len(b), sigDataOffset)
	}
	q := new(Quote)
	q.Header = decodeHeader(b[:HeaderSize])
	switch {
	case q.Header.Version != QuoteVersion:
		return nil, fmt.Errorf("%w: version %d, want %d", ErrVersion, q.Header.Version, QuoteVersion)
	case q.Header.AttestationKeyType != AttestationKeyECDSAP256:
		return nil, fmt.Errorf("%w: attestation key type %d, want %d (ECDSA-P256)", ErrKeyType, q.Header.AttestationKeyType, AttestationKeyECDSAP256)
	case q.Header.TEEType != TEETypeSGX:
		return nil, fmt.Errorf("%w: TEE type 0x%x, want 0 (SGX)", ErrTEEType, q.Header.TEEType)
	}
	q.Report = decodeReportBody(b[HeaderSize:signedSize])

	sigLen := binary.LittleEndian.Uint32(b[signedSize:])
	rest := b[sigDataOffset:]
	if uint64(sigLen) > uint64(len(rest)) {
		return nil, fmt.Errorf("%w: signature data length %d exceeds the %d bytes left", ErrLength, sigLen, len(rest))
	}
	if int(sigLen) < len(rest) {
		return nil, fmt.Errorf("%w: %d bytes after the %d bytes of signature data", ErrLength, len(rest)-int(sigLen), sigLen)
	}
	if len(rest) < fixedSigData {
		return nil, fmt.Errorf("%w: signature data is %d bytes, its fixed fields take %d", ErrTruncated, len(rest), fixedSigData)
	}
	rest = rest[copy(q.Signature[:], rest):]
	rest = rest[copy(q.AttestationKey[:], rest):]
	q.QEReport = decodeReportBody(rest[:ReportBodySize])
	rest = rest[ReportBodySize:]
	rest = rest[copy(q.QEReportSignature[:], rest):]
	authLen := int(binary.LittleEndian.Uint16(rest))
	rest = rest[2:]
	if authLen > len(rest) {
		return nil, fmt.Errorf("%w: QE authentication data length %d exceeds the %d bytes left", ErrLength, authLen, len(rest))
	}
	q.QEAuthData = append([]byte{}, rest[:authLen]...)
	rest = rest[authLen:]
	if len(rest) < 6 {
		return nil, fmt.Errorf("%w: %d bytes left for the certification data type and length, want 6", ErrTruncated, len(rest))
	}
	q.CertDataType = binary.LittleEndian.Uint16(rest)
	certLen := binary.LittleEndian.Uint32(rest[2:])
	rest = rest[6:]
	if q.CertDataType != CertDataPCKChain {
		return nil, fmt.Errorf("%w: type %d, want %d (PEM PCK certificate chain)", ErrCertDataType, q.CertDataType, CertDataPCKChain)
	}
	if uint64(certLen) != uint64(len(rest)) {
		return nil, fmt.Errorf("%w: certification data length %d, but %d bytes are left in the signature data", ErrLength, certLen, len(rest))
	}
	q.CertData = append([]byte{}, rest...)
	return q, nil
}

// Marshal encodes q in the quote format. For a quote returned by
// [ParseQuote] it returns the bytes that were parsed. QEAuthData must be at
// most 65535 bytes.
func (q *Quote) Marshal() []byte {
	n := sigDataOffset + fixedSigData + len(q.QEAuthData) + 6 + len(q.CertData)
	b := make([]byte, 0, n)
	b = q.appendSigned(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(n-sigDataOffset))
	b = append(b, q.Signature[:]...)
	b = append(b, q.AttestationKey[:]...)
	b = q.QEReport.append(b)
	b = append(b, q.QEReportSignature[:]...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(q.QEAuthData)))
	b = append(b, q.QEAuthData...)
	b = binary.LittleEndian.AppendUint16(b, q.CertDataType)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(q.CertData)))
	return append(b, q.CertData...)
}

// appendSigned appends the header and the ISV report body: the bytes that
// the attestation key signs.
func (q *Quote) appendSigned(b []byte) []byte {
	h := &q.Header
	b = binary.LittleEndian.AppendUint16(b, h.Version)
	b = binary.LittleEndian.AppendUint16(b, h.AttestationKeyType)
	b = binary.LittleEndian.AppendUint32(b, h.TEEType)
	b = binary.LittleEndian.AppendUint16(b, h.QESVN)
	b = binary.LittleEndian.AppendUint16(b, h.PCESVN)
	b = append(b, h.QEVendorID[:]...)
	b = append(b, h.UserData[:]...)
	return q.Report.append(b)
}

func decodeHeader(b []byte) Header {
	var h Header
	h.Version = binary.LittleEndian.Uint16(b[0:])
	h.AttestationKeyType = binary.LittleEndian.Uint16(b[2:])
	h.TEEType = binary.LittleEndian.Uint32(b[4:])
	h.QESVN = binary.LittleEndian.Uint16(b[8:])
	h.PCESVN = binary.LittleEndian.Uint16(b[10:])
	copy(h.QEVendorID[:], b[12:28])
	copy(h.UserData[:], b[28:48])
	return h
}

// decodeReportBody decodes the ReportBodySize bytes of b.
func decodeReportBody(b []byte) ReportBody {
	var r ReportBody
	b = b[copy(r.CPUSVN[:], b):]
	r.MiscSelect = binary.LittleEndian.Uint32(b)
	b = b[4:]
	b = b[copy(r.reserved1[:], b):]
	b = b[copy(r.ISVExtProdID[:], b):]
	r.Attributes.Flags = binary.LittleEndian.Uint64(b)
	r.Attributes.XFRM = binary.LittleEndian.Uint64(b[8:])
	b = b[16:]
	b = b[copy(r.MREnclave[:], b):]
	b = b[copy(r.reserved2[:], b):]
	b = b[copy(r.MRSigner[:], b):]
	b = b[copy(r.reserved3[:], b):]
	b = b[copy(r.ConfigID[:], b):]
	r.ISVProdID = binary.LittleEndian.Uint16(b)
	r.ISVSVN = binary.LittleEndian.Uint16(b[2:])
	r.ConfigSVN = binary.LittleEndian.Uint16(b[4:])
	b = b[6:]
	b = b[copy(r.reserved4[:], b):]
	b = b[copy(r.ISVFamilyID[:], b):]
	copy(r.ReportData[:], b)
	return r
}

// Marshal returns the 384-byte encoding of r.
func (r *ReportBody) Marshal() []byte {
	return r.append(make([]byte, 0, ReportBodySize))
}

func (r *ReportBody) append(b []byte) []byte {
	b = append(b, r.CPUSVN[:]...)
	b = binary.LittleEndian.AppendUint32(b, r.MiscSelect)
	b = append(b, r.reserved1[:]...)
	b = append(b, r.ISVExtProdID[:]...)
	b = binary.LittleEndian.AppendUint64(b, r.Attributes.Flags)
	b = binary.LittleEndian.AppendUint64(b, r.Attributes.XFRM)
	b = append(b, r.MREnclave[:]...)
	b = append(b, r.reserved2[:]...)
	b = append(b, r.MRSigner[:]...)
	b = append(b, r.reserved3[:]...)
	b = append(b, r.ConfigID[:]...)
	b = binary.LittleEndian.AppendUint16(b, r.ISVProdID)
	b = binary.LittleEndian.AppendUint16(b, r.ISVSVN)
	b = binary.LittleEndian.AppendUint16(b, r.ConfigSVN)
	b = append(b, r.reserved4[:]...)
	b = append(b, r.ISVFamilyID[:]...)
	return append(b, r.ReportData[:]...)
}

// Debug reports whether the enclave runs in debug mode.
func (r *ReportBody) Debug() bool { return r.Attributes.Flags&FlagDebug != 0 }

// FMSPC returns the platform's FMSPC (family, model, stepping, platform
// type and customization), from the SGX extension of the PCK certificate in
// the certification data: the key under which Intel PCS serves the TCB info
// that [Collateral] needs. The certificate is not verified.
func (q *Quote) FMSPC() ([6]byte, error) {
	certs, err := parseCertChain(q.CertData)
	if err != nil {
		return [6]byte{}, fmt.Errorf("%w: %w", ErrPCKChain, err)
	}
	x, err := pckExtensionOf(certs[0])
	if err != nil {
		return [6]byte{}, err
	}
	return x.FMSPC, nil
}
