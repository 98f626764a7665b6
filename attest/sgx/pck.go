package sgx

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"time"
)

// Certificate subject common names that Intel uses. Checking them keeps a
// certificate of one role from being used in another (say, a PCK leaf as a
// TCB signing certificate) under the same root.
const (
	cnPCKLeaf     = "Intel SGX PCK Certificate"
	cnPlatformCA  = "Intel SGX PCK Platform CA"
	cnProcessorCA = "Intel SGX PCK Processor CA"
	cnTCBSigning  = "Intel SGX TCB Signing"
)

// parseCertChain decodes the CERTIFICATE blocks of a PEM chain. Only
// whitespace and NUL bytes (Intel's chains end with one) may follow the last
// block.
func parseCertChain(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(bytes.Trim(rest, " \t\r\n\x00")) != 0 {
		return nil, fmt.Errorf("%d bytes that are not a PEM certificate", len(rest))
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return certs, nil
}

// verifyChain checks that certs is exactly leaf, intermediates..., root,
// where root is byte for byte the pinned root, and that it verifies with
// crypto/x509 at time t. leafCN and intermediateCNs are the accepted
// subject common names. It returns the leaf's P-256 public key.
func verifyChain(certs []*x509.Certificate, root *x509.Certificate, t time.Time, leafCN string, intermediateCNs ...string) (*ecdsa.PublicKey, error) {
	if want := 2 + min(len(intermediateCNs), 1); len(certs) != want {
		return nil, fmt.Errorf("%d certificates, want %d", len(certs), want)
	}
	if last := certs[len(certs)-1]; !bytes.Equal(last.Raw, root.Raw) {
		return nil, fmt.Errorf("%w: chain ends at %q", ErrUntrustedRoot, last.Subject)
	}
	leaf := certs[0]
	if leaf.Subject.CommonName != leafCN {
		return nil, fmt.Errorf("leaf certificate is %q, want %q", leaf.Subject.CommonName, leafCN)
	}
	inter := x509.NewCertPool()
	if len(certs) == 3 {
		cn := certs[1].Subject.CommonName
		ok := false
		for _, want := range intermediateCNs {
			ok = ok || cn == want
		}
		if !ok {
			return nil, fmt.Errorf("intermediate certificate is %q, want one of %q", cn, intermediateCNs)
		}
		inter.AddCert(certs[1])
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   t,
		// Intel's certificates carry no extended key usage; any is fine.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, err
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("leaf certificate key is not ECDSA-P256")
	}
	return pub, nil
}

// OIDs of the SGX extension of PCK certificates (Intel SGX PCK Certificate
// and CRL Profile).
var (
	oidSGXExtension = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oidTCB          = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 2}
	oidPCEID        = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 3}
	oidFMSPC        = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 4}
)

// The TCB sequence holds components 1 to 16 (arcs 1 to 16), the PCESVN
// (arc 17) and the CPUSVN (arc 18) under oidTCB.
const (
	arcPCESVN = 17
	arcCPUSVN = 18
)

// pckExtension is what the verifier needs from a PCK certificate's SGX
// extension.
type pckExtension struct {
	FMSPC   [6]byte
	PCEID   [2]byte
	CompSVN [16]byte // SGX TCB component SVNs 1 to 16
	PCESVN  uint16
	CPUSVN  [16]byte
}

// extEntry is one element of the SGX extension's SEQUENCE OF SEQUENCE
// { OBJECT IDENTIFIER, value }.
type extEntry struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// pckExtensionOf finds and decodes the SGX extension of cert.
func pckExtensionOf(cert *x509.Certificate) (*pckExtension, error) {
	var raw []byte
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidSGXExtension) {
			if raw != nil {
				return nil, fmt.Errorf("%w: two SGX extensions", ErrPCKExtension)
			}
			raw = e.Value
		}
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: no SGX extension (OID %s)", ErrPCKExtension, oidSGXExtension)
	}
	return parsePCKExtension(raw)
}

// parsePCKExtension decodes the DER value of the SGX extension. Entries it
// does not need (PPID, SGX type, platform instance ID, configuration) are
// skipped.
func parsePCKExtension(der []byte) (*pckExtension, error) {
	entries, err := parseEntries(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPCKExtension, err)
	}
	var x pckExtension
	var seen struct{ tcb, pceid, fmspc bool }
	for _, e := range entries {
		switch {
		case e.ID.Equal(oidTCB):
			if seen.tcb {
				return nil, fmt.Errorf("%w: two TCB entries", ErrPCKExtension)
			}
			seen.tcb = true
			if err := parseTCBEntries(e.Value.FullBytes, &x); err != nil {
				return nil, fmt.Errorf("%w: TCB: %w", ErrPCKExtension, err)
			}
		case e.ID.Equal(oidPCEID):
			if seen.pceid {
				return nil, fmt.Errorf("%w: two PCE-ID entries", ErrPCKExtension)
			}
			seen.pceid = true
			if err := octets(e.Value.FullBytes, x.PCEID[:]); err != nil {
				return nil, fmt.Errorf("%w: PCE-ID: %w", ErrPCKExtension, err)
			}
		case e.ID.Equal(oidFMSPC):
			if seen.fmspc {
				return nil, fmt.Errorf("%w: two FMSPC entries", ErrPCKExtension)
			}
			seen.fmspc = true
			if err := octets(e.Value.FullBytes, x.FMSPC[:]); err != nil {
				return nil, fmt.Errorf("%w: FMSPC: %w", ErrPCKExtension, err)
			}
		}
	}
	if !seen.tcb || !seen.pceid || !seen.fmspc {
		return nil, fmt.Errorf("%w: missing TCB, PCE-ID or FMSPC", ErrPCKExtension)
	}
	return &x, nil
}

func parseTCBEntries(der []byte, x *pckExtension) error {
	entries, err := parseEntries(der)
	if err != nil {
		return err
	}
	var seen [arcCPUSVN + 1]bool
	for _, e := range entries {
		n := len(oidTCB)
		if len(e.ID) != n+1 || !e.ID[:n].Equal(oidTCB) {
			continue
		}
		arc := e.ID[n]
		if arc < 1 || arc > arcCPUSVN {
			continue
		}
		if seen[arc] {
			return fmt.Errorf("entry %s twice", e.ID)
		}
		seen[arc] = true
		switch {
		case arc <= 16:
			v, err := integer(e.Value.FullBytes, 0xff)
			if err != nil {
				return fmt.Errorf("component %d SVN: %w", arc, err)
			}
			x.CompSVN[arc-1] = byte(v)
		case arc == arcPCESVN:
			v, err := integer(e.Value.FullBytes, 0xffff)
			if err != nil {
				return fmt.Errorf("PCESVN: %w", err)
			}
			x.PCESVN = uint16(v)
		case arc == arcCPUSVN:
			if err := octets(e.Value.FullBytes, x.CPUSVN[:]); err != nil {
				return fmt.Errorf("CPUSVN: %w", err)
			}
		}
	}
	for arc := 1; arc <= arcCPUSVN; arc++ {
		if !seen[arc] {
			return fmt.Errorf("entry %d missing", arc)
		}
	}
	return nil
}

func parseEntries(der []byte) ([]extEntry, error) {
	var entries []extEntry
	rest, err := asn1.Unmarshal(der, &entries)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(rest))
	}
	return entries, nil
}

// integer decodes a DER INTEGER in [0, max].
func integer(der []byte, max int64) (int64, error) {
	var v int64
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil {
		return 0, err
	}
	if len(rest) != 0 {
		return 0, fmt.Errorf("%d trailing bytes", len(rest))
	}
	if v < 0 || v > max {
		return 0, fmt.Errorf("%d out of range [0, %d]", v, max)
	}
	return v, nil
}

// octets decodes a DER OCTET STRING of exactly len(dst) bytes into dst.
func octets(der, dst []byte) error {
	var v []byte
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d trailing bytes", len(rest))
	}
	if len(v) != len(dst) {
		return fmt.Errorf("%d bytes, want %d", len(v), len(dst))
	}
	copy(dst, v)
	return nil
}
