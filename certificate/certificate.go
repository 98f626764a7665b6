// Package certificate is the exposure certificate: a statement, signed
// inside a conftrace backend's TEE, that the phone presenting it was
// exposed, which the phone's user may show a hospital or a health
// authority (the paper's "report the result … optionally also to the
// hospital", under the user's control).
//
// A phone asks for a certificate in its daily exchange (or in a GPS trace
// check), with a nonce it chose; if the backend finds it exposed, the
// answer carries a certificate saying
//
//   - which matching found the exposure: Bluetooth contacts or GPS traces;
//   - at which order (1: contact of a confirmed case; k+1: contact of a
//     phone exposed at order k, when the policy has n-order notifications);
//   - on which day (the most recent exposed day), and with which risk, as
//     precisely as the backend's policy lets its answers be: under coarse
//     answers only that the day reached the policy's threshold
//     (RiskMinutes 0), under detailed answers the day's weighted minutes
//     (Bluetooth) or minutes near patients (GPS);
//   - the hour it was issued and the hour it expires;
//   - the phone's nonce, and which key signed it.
//
// Nothing in it identifies the phone or links two of its certificates:
// besides what it states, it holds only the nonce, which the phone draws
// anew for each one (or takes from the verifier, as a challenge), and a
// signature. The key that signs is the backend's certificate key, whose
// public half the attestation bundle binds (attest.Bundle.CertificateKey):
// a verifier who checked the bundle knows that only the attested code,
// enforcing the attested policy, could have signed.
//
// # Encoding
//
// A certificate is [Size] bytes, every field fixed-size and big-endian:
//
//	offset size field
//	     0    1 version, 1
//	     1    1 kind: 1 Bluetooth, 2 GPS
//	     2    1 order, 1 to 255 (GPS: 1)
//	     3    2 risk minutes, 0 to 65535 (0: not stated)
//	     5    4 exposure day: days since 1970-01-01 (UTC)
//	     9    4 issued: hours since 1970-01-01T00:00Z
//	    13    4 expires: hours since 1970-01-01T00:00Z, after issued
//	    17   32 nonce, not all zeros
//	    49    8 key id: the first 8 bytes of the SHA-256 of the public key
//	    57   64 signature: Ed25519 (RFC 8032) of the 33 bytes
//	            "conftrace exposure certificate v1" and a zero byte,
//	            followed by bytes 0 to 56
//
// The exposure day is not after the day of issue. Every certificate has
// one encoding, and [Parse] refuses any other. Its text form, for files,
// mail and QR codes, is [TextPrefix] followed by the encoding in unpadded
// base64url ([Certificate.MarshalText]).
//
// # Verifying
//
// [Certificate.Verify] checks a certificate against the attested key and
// policy, at a time: the key id and the signature, the nonce if the
// verifier gave the phone one, that the policy could have issued it (the
// order, the risk, the validity, the exposure day within the retention
// window) and that it is neither issued in the future nor expired. When
// the policy says certificates are single use, a verifier also records the
// nonces it accepted (package certificate/seen) and refuses a second
// presentation. Every refusal wraps one of the Err values; [Reason] names
// it for machines.
package certificate

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Format constants.
const (
	// Version is the encoding's version, its first byte.
	Version = 1
	// NonceSize is the size of the phone's nonce.
	NonceSize = 32
	// KeyIDSize is the size of the signing key's id.
	KeyIDSize = 8
	// Size is the size of an encoded certificate.
	Size = signedSize + ed25519.SignatureSize
	// TextPrefix starts the text form of a certificate.
	TextPrefix = "conftrace-certificate:"

	signedSize = 1 + 1 + 1 + 2 + 4 + 4 + 4 + NonceSize + KeyIDSize
	// signatureLabel separates certificate signatures from every other
	// signature the backend's key could make.
	signatureLabel = "conftrace exposure certificate v1\x00"
	// MaxRiskMinutes is the largest risk a certificate can state.
	MaxRiskMinutes = 1<<16 - 1
	// TextSize is the size of a certificate's text form.
	TextSize = len(TextPrefix) + (Size*8+5)/6
)

// Kind says which matching found an exposure.
type Kind uint8

// The kinds of exposure.
const (
	// Bluetooth: contacts the phone's sightings proved (package enid).
	Bluetooth Kind = 1
	// GPS: the phone's trace came near an infected patient's.
	GPS Kind = 2
)

func (k Kind) String() string {
	switch k {
	case Bluetooth:
		return "bluetooth"
	case GPS:
		return "gps"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Certificate is an exposure certificate. Its times are UTC: Date is a
// midnight, IssuedAt and ExpiresAt are on the hour.
type Certificate struct {
	Kind Kind
	// Order is the order of the exposure: 1 for a contact of a confirmed
	// case.
	Order int
	// Date is the exposed day.
	Date time.Time
	// RiskMinutes is the exposed day's risk when the policy's answers are
	// detailed: weighted minutes (Bluetooth) or minutes near patients in
	// the 24 hours up to the exposure (GPS), in whole minutes rounded
	// down. 0 when the policy's answers are coarse: the certificate then
	// says only that the day reached the policy's threshold.
	RiskMinutes int
	// IssuedAt is the hour the certificate was issued, ExpiresAt the hour
	// from which it is refused.
	IssuedAt, ExpiresAt time.Time
	// Nonce is what the phone chose.
	Nonce [NonceSize]byte
	// KeyID names the key that signed (KeyIDOf).
	KeyID [KeyIDSize]byte
	// Signature is the Ed25519 signature of the other fields.
	Signature [ed25519.SignatureSize]byte
}

// KeyIDOf returns the id of a certificate key: the first KeyIDSize bytes
// of the SHA-256 of the public key.
func KeyIDOf(pub ed25519.PublicKey) [KeyIDSize]byte {
	h := sha256.Sum256(pub)
	return [KeyIDSize]byte(h[:KeyIDSize])
}

// Sign returns c signed with key: its KeyID and Signature set. It refuses
// a certificate whose fields the encoding cannot hold.
func Sign(c Certificate, key ed25519.PrivateKey) (Certificate, error) {
	if len(key) != ed25519.PrivateKeySize {
		return Certificate{}, fmt.Errorf("certificate: signing key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	c.KeyID = KeyIDOf(key.Public().(ed25519.PublicKey))
	b, err := c.encode()
	if err != nil {
		return Certificate{}, err
	}
	copy(c.Signature[:], ed25519.Sign(key, signedBytes(b)))
	return c, nil
}

// signedBytes returns what the signature covers: the label and the
// encoding up to the signature.
func signedBytes(enc []byte) []byte {
	return append([]byte(signatureLabel), enc[:signedSize]...)
}

// MarshalBinary returns the encoding of c.
func (c Certificate) MarshalBinary() ([]byte, error) { return c.encode() }

// encode checks c and returns its encoding, with c.Signature as it is.
func (c Certificate) encode() ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, Size)
	b = append(b, Version, byte(c.Kind), byte(c.Order))
	b = binary.BigEndian.AppendUint16(b, uint16(c.RiskMinutes))
	b = binary.BigEndian.AppendUint32(b, uint32(c.Date.Unix()/secondsPerDay))
	b = binary.BigEndian.AppendUint32(b, uint32(c.IssuedAt.Unix()/secondsPerHour))
	b = binary.BigEndian.AppendUint32(b, uint32(c.ExpiresAt.Unix()/secondsPerHour))
	b = append(b, c.Nonce[:]...)
	b = append(b, c.KeyID[:]...)
	return append(b, c.Signature[:]...), nil
}

const (
	secondsPerHour = 3600
	secondsPerDay  = 24 * secondsPerHour
)

// check reports the first field of c that the encoding cannot hold, or
// that no backend issues, as an error wrapping ErrMalformed.
func (c Certificate) check() error {
	switch {
	case c.Kind != Bluetooth && c.Kind != GPS:
		return malformedf("unknown kind %d", uint8(c.Kind))
	case c.Order < 1 || c.Order > 255:
		return malformedf("order %d outside 1..255", c.Order)
	case c.Kind == GPS && c.Order != 1:
		return malformedf("a GPS exposure of order %d: GPS matches are of order 1", c.Order)
	case c.RiskMinutes < 0 || c.RiskMinutes > MaxRiskMinutes:
		return malformedf("risk of %d minutes outside 0..%d", c.RiskMinutes, MaxRiskMinutes)
	}
	if err := checkTime("exposure day", c.Date, secondsPerDay); err != nil {
		return err
	}
	if err := checkTime("issue time", c.IssuedAt, secondsPerHour); err != nil {
		return err
	}
	if err := checkTime("expiry", c.ExpiresAt, secondsPerHour); err != nil {
		return err
	}
	switch {
	case !c.ExpiresAt.After(c.IssuedAt):
		return malformedf("expires at %s, not after its issue at %s", c.ExpiresAt.UTC().Format(time.RFC3339), c.IssuedAt.UTC().Format(time.RFC3339))
	case c.Date.After(c.IssuedAt):
		return malformedf("exposure day %s after the certificate's issue at %s", c.Date.UTC().Format(time.DateOnly), c.IssuedAt.UTC().Format(time.RFC3339))
	case c.Nonce == [NonceSize]byte{}:
		return malformedf("a nonce of zeros")
	}
	return nil
}

// checkTime refuses a time that is not a whole number of units (days or
// hours) since 1970 that fits 32 bits.
func checkTime(what string, t time.Time, unit int64) error {
	s := t.Unix()
	if s < 0 || s%unit != 0 || t.Nanosecond() != 0 || s/unit > 1<<32-1 {
		return malformedf("%s %s: want a whole %s from 1970 on", what, t.UTC().Format(time.RFC3339), map[int64]string{secondsPerDay: "day", secondsPerHour: "hour"}[unit])
	}
	return nil
}

// Parse decodes a certificate's binary encoding strictly: the version,
// every field's range, and that re-encoding gives the same bytes. It does
// not check the signature (see Verify).
func Parse(b []byte) (Certificate, error) {
	if len(b) != Size {
		return Certificate{}, malformedf("%d bytes, want %d", len(b), Size)
	}
	if b[0] != Version {
		return Certificate{}, malformedf("version %d, want %d", b[0], Version)
	}
	hour := func(off int) time.Time {
		return time.Unix(int64(binary.BigEndian.Uint32(b[off:]))*secondsPerHour, 0).UTC()
	}
	c := Certificate{
		Kind:        Kind(b[1]),
		Order:       int(b[2]),
		RiskMinutes: int(binary.BigEndian.Uint16(b[3:])),
		Date:        time.Unix(int64(binary.BigEndian.Uint32(b[5:]))*secondsPerDay, 0).UTC(),
		IssuedAt:    hour(9),
		ExpiresAt:   hour(13),
		Nonce:       [NonceSize]byte(b[17:49]),
		KeyID:       [KeyIDSize]byte(b[49:57]),
		Signature:   [ed25519.SignatureSize]byte(b[57:]),
	}
	if err := c.check(); err != nil {
		return Certificate{}, err
	}
	return c, nil
}

// MarshalText returns the text form: TextPrefix and the encoding in
// unpadded base64url.
func (c Certificate) MarshalText() ([]byte, error) {
	b, err := c.encode()
	if err != nil {
		return nil, err
	}
	return base64.RawURLEncoding.AppendEncode([]byte(TextPrefix), b), nil
}

// ParseText decodes the text form strictly: the prefix, then exactly the
// unpadded base64url of a valid encoding, with nothing around it (callers
// trim the line end of a file).
func ParseText(s []byte) (Certificate, error) {
	rest, ok := bytes.CutPrefix(s, []byte(TextPrefix))
	if !ok {
		return Certificate{}, malformedf("does not start with %q", TextPrefix)
	}
	if len(rest) != TextSize-len(TextPrefix) {
		return Certificate{}, malformedf("%d characters after the prefix, want %d", len(rest), TextSize-len(TextPrefix))
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(string(rest))
	if err != nil {
		return Certificate{}, malformedf("not base64url: %v", err)
	}
	return Parse(b)
}

// UnmarshalText is ParseText into c.
func (c *Certificate) UnmarshalText(s []byte) error {
	d, err := ParseText(s)
	if err != nil {
		return err
	}
	*c = d
	return nil
}

// String returns a one-line summary of what c states.
func (c Certificate) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s exposure of order %d on %s", c.Kind, c.Order, c.Date.UTC().Format(time.DateOnly))
	if c.RiskMinutes > 0 {
		fmt.Fprintf(&b, ", risk %d minutes", c.RiskMinutes)
	}
	fmt.Fprintf(&b, ", issued %s, expires %s", c.IssuedAt.UTC().Format(time.RFC3339), c.ExpiresAt.UTC().Format(time.RFC3339))
	return b.String()
}
