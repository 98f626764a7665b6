// Package gaen reads, verifies and writes the signed key export files that
// Google/Apple Exposure Notification (GAEN) key servers publish, as Apple and
// Google's "Exposure Key Export File Format and Verification" specifies them.
// With it the backend imports the Temporary Exposure Keys of users who tested
// positive in another GAEN country, so that its devices can learn whether
// they met one of them without downloading anybody's keys.
//
// An export file is a zip archive of two entries:
//
//   - export.bin: the 16-byte header "EK Export v1" padded with spaces,
//     followed by a TemporaryExposureKeyExport protocol buffer: the time
//     window, the region, the batch number and the keys, each a 16-byte TEK
//     with its rolling start interval and rolling period.
//   - export.sig: a TEKSignatureList protocol buffer of one or more ECDSA
//     P-256 signatures over the SHA-256 of the whole export.bin. Each names
//     the key that made it by a key id (often the country's mobile country
//     code) and a key version.
//
// A key server's signing key is the only thing that vouches for its keys, so
// [Open] checks the signature before it parses export.bin:
//
//	pub, err := gaen.ParsePublicKeyPEM(pemBytes) // from the foreign server's operator
//	...
//	trusted := []gaen.VerifyingKey{{Name: "de-cwa", KeyID: "262", KeyVersion: "v1", Key: pub}}
//	exp, err := gaen.Open(zipBytes, trusted, gaen.Limits{})
//	if err != nil {
//		return err // errors.Is tells ErrBadSignature, ErrTooLarge, ... apart
//	}
//	if alreadyImported(exp.Digest) {
//		return nil
//	}
//	for _, k := range exp.Keys {
//		if err := k.Valid(); err != nil {
//			skipped++ // one bad key does not spoil the file
//			continue
//		}
//		key, err := enid.NewKey(k.TEK, k.RollingStart, k.RollingPeriod)
//		...
//	}
//
// Open refuses a whole file, with an error matching one of the Err values of
// this package, when the archive, its size, its header or its signature is
// wrong. It does not refuse a file for one bad key: it returns every key
// and [Key.Valid] says which ones cannot be used. Nor does it judge keys by
// age; compare [Key.RollingStart] with your own retention window.
//
// [Write] makes a signed export file, for tests and for playing a foreign
// key server in simulations.
package gaen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/conftrace/conftrace/enid"
)

// Errors of [Open]. Each comes wrapped with the detail of what was wrong.
var (
	// ErrNotZip means the input is not a zip archive, or one this package
	// cannot read: a damaged entry, or a compression method other than
	// store or deflate.
	ErrNotZip = errors.New("gaen: not a readable zip archive")
	// ErrTooLarge means export.bin or export.sig declares, or inflates to,
	// more bytes than [Limits] allows: a zip bomb, or a file larger than
	// this importer is prepared for.
	ErrTooLarge = errors.New("gaen: zip entry too large")
	// ErrMissingEntry means the archive has no export.bin or no export.sig.
	ErrMissingEntry = errors.New("gaen: missing zip entry")
	// ErrDuplicateEntry means the archive has export.bin or export.sig more
	// than once, so that different readers could read different ones.
	ErrDuplicateEntry = errors.New("gaen: duplicate zip entry")
	// ErrHeader means export.bin does not start with the export header.
	ErrHeader = errors.New("gaen: not an export.bin header")
	// ErrBadSignature means a signature that names a listed key, or any
	// signature when a key is listed without a KeyID, does not verify:
	// export.bin was altered, or another key signed it.
	ErrBadSignature = errors.New("gaen: signature does not verify")
	// ErrUnknownSigner means no signature in export.sig names a listed key
	// (by KeyID and KeyVersion), or export.sig holds no signature at all.
	ErrUnknownSigner = errors.New("gaen: no signature by a listed key")
	// ErrUnsupportedAlgorithm means the signatures that name a listed key
	// use an algorithm other than ECDSA P-256 with SHA-256.
	ErrUnsupportedAlgorithm = errors.New("gaen: unsupported signature algorithm")
	// ErrMalformed means export.bin or export.sig is not a valid protocol
	// buffer of its message type.
	ErrMalformed = errors.New("gaen: malformed export")
	// ErrTooManyKeys means export.bin holds more keys and revised keys
	// together than [Limits] allows.
	ErrTooManyKeys = errors.New("gaen: too many keys")
)

// ErrInvalidKey is the error of [Key.Valid]: a key that cannot be matched.
var ErrInvalidKey = errors.New("gaen: invalid key")

// Export is the content of one export file.
type Export struct {
	// Region is where the keys come from, usually a country code.
	Region string
	// Start and End bound the time in which the key server received the
	// keys, to the second.
	Start, End time.Time
	// BatchNum and BatchSize place the file in a batch, counted from 1.
	// Key servers write 1 of 1; [Write] writes 1 for zero.
	BatchNum, BatchSize int
	// Keys are the keys of users who tested positive, published for the
	// first time.
	Keys []Key
	// Revised are keys published before whose ReportType changed. A key
	// revised to [Revoked] was withdrawn (say, after a negative
	// confirmatory test) and should no longer be matched.
	Revised []Key

	// SignedBy is the Name of the [VerifyingKey] whose signature verified.
	// Open sets it; Write ignores it.
	SignedBy string
	// Digest is the SHA-256 of export.bin, the bytes the signature covers.
	// A file fetched again, even re-signed, has the same Digest as long as
	// its content is the same, so importers record it to import each file
	// once. Open sets it; Write ignores it.
	Digest [32]byte
}

// Key is one Temporary Exposure Key of an export. The types of TEK,
// RollingStart and RollingPeriod are those of [enid.NewKey], which derives
// the key's identifiers.
type Key struct {
	// TEK is the Temporary Exposure Key.
	TEK enid.TEK
	// RollingStart is the first 10-minute interval the key was used in.
	RollingStart enid.Interval
	// RollingPeriod is the number of intervals the key was used for; the
	// file leaves it out for a whole day, [enid.RollingPeriod].
	RollingPeriod int
	// ReportType is how the user's diagnosis was established.
	ReportType ReportType
	// DaysSinceOnset is the number of days from the onset of symptoms to
	// the key's day, negative for days before it. It is meaningful only if
	// HasOnset.
	DaysSinceOnset int32
	HasOnset       bool
	// TransmissionRisk is the server's risk level of the key, 0 if unset.
	// GAEN v1.5 superseded it with ReportType and DaysSinceOnset.
	TransmissionRisk int32

	// problem is what Open found wrong with the key that the fields above
	// cannot show: a TEK of the wrong length, a negative rolling start.
	problem error
}

// Valid reports whether the key can be matched: a 16-byte TEK and a rolling
// period in 1..[enid.RollingPeriod] that ends in the representable range of
// intervals. Its error wraps [ErrInvalidKey]. Valid does not look at the
// key's age or report type; those are the importer's policy.
func (k Key) Valid() error {
	if k.problem != nil {
		return k.problem
	}
	if k.RollingPeriod < 1 || k.RollingPeriod > enid.RollingPeriod {
		return fmt.Errorf("%w: rolling period %d is not in 1..%d", ErrInvalidKey, k.RollingPeriod, enid.RollingPeriod)
	}
	if uint64(k.RollingStart)+uint64(k.RollingPeriod) > math.MaxUint32 {
		return fmt.Errorf("%w: rolling start %d + period %d overflows the interval range", ErrInvalidKey, k.RollingStart, k.RollingPeriod)
	}
	return nil
}

// ReportType is how a key's owner was diagnosed, with the values of the
// export format.
type ReportType int32

// The report types of the export format.
const (
	ReportUnknown              ReportType = 0 // not given
	ConfirmedTest              ReportType = 1
	ConfirmedClinicalDiagnosis ReportType = 2
	SelfReport                 ReportType = 3
	Recursive                  ReportType = 4 // exposed to a confirmed case
	Revoked                    ReportType = 5 // withdrawn; only in revised keys
)

// String returns the name the export format gives the report type.
func (t ReportType) String() string {
	switch t {
	case ReportUnknown:
		return "UNKNOWN"
	case ConfirmedTest:
		return "CONFIRMED_TEST"
	case ConfirmedClinicalDiagnosis:
		return "CONFIRMED_CLINICAL_DIAGNOSIS"
	case SelfReport:
		return "SELF_REPORT"
	case Recursive:
		return "RECURSIVE"
	case Revoked:
		return "REVOKED"
	}
	return fmt.Sprintf("ReportType(%d)", int32(t))
}

// VerifyingKey is a key server's public signing key that [Open] trusts.
type VerifyingKey struct {
	// Name identifies the key server in [Export.SignedBy] and in errors.
	Name string
	// KeyID and KeyVersion are the verification_key_id and
	// verification_key_version with which the server labels its signatures.
	// A signature is checked against this key only if its labels match. An
	// empty KeyVersion matches every version; an empty KeyID matches every
	// signature, for when the server's labels are not known, at the price
	// of reporting a signature by an unknown key as [ErrBadSignature].
	KeyID, KeyVersion string
	// Key is the ECDSA P-256 public key.
	Key *ecdsa.PublicKey
}

// SigningKey is the private key with which [Write] signs, and the labels
// that tell verifiers which public key to check the signature with.
type SigningKey struct {
	// KeyID and KeyVersion become the signature's verification_key_id and
	// verification_key_version. The format allows [a-zA-Z0-9_] in them.
	KeyID, KeyVersion string
	// Key is an ECDSA P-256 private key.
	Key *ecdsa.PrivateKey
}

// Limits bounds what [Open] reads. A zero field takes its default.
type Limits struct {
	// MaxExportBytes bounds export.bin, decompressed. Default
	// [DefaultMaxExportBytes].
	MaxExportBytes int64
	// MaxSignatureBytes bounds export.sig, decompressed. Default
	// [DefaultMaxSignatureBytes].
	MaxSignatureBytes int64
	// MaxKeys bounds the number of keys and revised keys together. Default
	// [DefaultMaxKeys].
	MaxKeys int
}

// Default limits. A key takes about 35 bytes of export.bin, so
// DefaultMaxExportBytes holds DefaultMaxKeys. Key servers differ in how many
// keys they put in one file (Google's reference server can be configured up
// to hundreds of thousands); raise both limits for sources that need it.
const (
	DefaultMaxExportBytes    = 4 << 20
	DefaultMaxSignatureBytes = 64 << 10 // GAEN allows 10 signatures of about 100 bytes
	DefaultMaxKeys           = 100_000
)

// withDefaults returns l with every unset field at its default.
func (l Limits) withDefaults() Limits {
	if l.MaxExportBytes <= 0 {
		l.MaxExportBytes = DefaultMaxExportBytes
	}
	if l.MaxSignatureBytes <= 0 {
		l.MaxSignatureBytes = DefaultMaxSignatureBytes
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = DefaultMaxKeys
	}
	return l
}

// ParsePublicKeyPEM parses a PEM "PUBLIC KEY" block (a DER
// SubjectPublicKeyInfo), the form in which key server operators publish
// their verification keys, and requires an ECDSA P-256 key.
func ParsePublicKeyPEM(b []byte) (*ecdsa.PublicKey, error) {
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("gaen: no PEM PUBLIC KEY block")
	}
	// A second key would be silently ignored, and the server it was meant
	// for would then fail verification for no visible reason.
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("gaen: more than one PEM block; give one key at a time")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("gaen: public key: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("gaen: public key is %s, want ECDSA P-256", keyKind(pub))
	}
	return ec, nil
}

// keyKind names a public key's type, and its curve if it is ECDSA.
func keyKind(pub any) string {
	if ec, ok := pub.(*ecdsa.PublicKey); ok {
		return "ECDSA " + ec.Curve.Params().Name
	}
	return fmt.Sprintf("%T", pub)
}
