package attest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/conftrace/conftrace/ohttp"
)

// bundleLabel starts the report data binding of a [Bundle]; it names the
// construction and its version so that the hash can mean nothing else.
// Version 2 added the validity period and the release statement, version
// 3 the certificate key.
const bundleLabel = "conftrace/attest bundle v3\x00"

// MaxClockSkew is how far in the future a bundle's IssuedAt may lie by the
// verifier's clock: phones' clocks are a few minutes off.
const MaxClockSkew = 5 * time.Minute

// Errors of [VerifyBundle] for a bundle used outside its validity period.
var (
	// ErrBundleExpired: the verifier's clock is at or past NotAfter.
	ErrBundleExpired = errors.New("attest: bundle expired")
	// ErrBundleNotYetValid: IssuedAt is more than MaxClockSkew ahead.
	ErrBundleNotYetValid = errors.New("attest: bundle issued in the future")
)

// Bundle is what a conftrace backend publishes so that clients can decide
// whether to talk to it: TEE evidence, the Oblivious HTTP key
// configurations to encrypt requests to, the policy the backend enforces,
// the period in which the bundle may be used, the key that signs the
// backend's exposure certificates (see package certificate) and,
// optionally, the release statement that admits the backend's code and
// policy (see package release). The evidence's report data is [BindReportData] of everything
// else, so verified evidence vouches for all of it.
//
// A Bundle encodes to JSON with the key configurations, the certificate
// key and the release statement in base64, the policy as a JSON value that an auditor can read
// in place, and the times as Unix seconds.
type Bundle struct {
	// Evidence is the TEE's evidence binding the rest of the bundle.
	Evidence Evidence `json:"evidence"`
	// KeyConfigs are the Oblivious HTTP key configurations in the
	// "application/ohttp-keys" format of RFC 9458.
	KeyConfigs []byte `json:"ohttp_keys"`
	// Policy is the backend's policy document. Only its bytes matter here:
	// they are hashed in compact form, so whitespace may change in transit
	// but nothing else may.
	Policy json.RawMessage `json:"policy"`
	// IssuedAt and NotAfter, in Unix seconds, bound when the bundle may be
	// used: its keys were made at IssuedAt, and clients refuse it from
	// NotAfter on. Evidence extracted once from a platform that a later
	// TCB recovery fixed is thereby useless after NotAfter.
	IssuedAt int64 `json:"issued_at"`
	NotAfter int64 `json:"not_after"`
	// Release is the signed release statement the backend was started
	// with, or empty.
	Release []byte `json:"release,omitempty"`
	// CertificateKey is the Ed25519 public key that verifies the
	// backend's exposure certificates (package certificate), or empty for
	// a backend that issues none.
	CertificateKey ed25519.PublicKey `json:"certificate_key,omitempty"`
}

// VerifiedBundle is what a verified [Bundle] vouches for.
type VerifiedBundle struct {
	// Identity is what the evidence proves about the backend's code.
	Identity Identity
	// KeyConfigs are the parsed Oblivious HTTP key configurations, which
	// the attested code holds the private keys for.
	KeyConfigs []ohttp.KeyConfig
	// Policy is the attested policy document in the canonical form that
	// was hashed (see [BindReportData]).
	Policy []byte
	// IssuedAt and NotAfter are the bundle's validity period.
	IssuedAt, NotAfter time.Time
	// Release is the attested release statement, or empty.
	Release []byte
	// CertificateKey is the attested exposure certificate key, or nil.
	CertificateKey ed25519.PublicKey
}

// Lifetime returns how long the bundle is valid from when it was issued.
func (vb *VerifiedBundle) Lifetime() time.Duration { return vb.NotAfter.Sub(vb.IssuedAt) }

// BindReportData returns the report data that binds b's contents, all but
// its evidence, into b's evidence. b.Policy must be valid JSON, b's
// validity period must not be empty or begin before 1970, and its
// certificate key must be empty or an Ed25519 public key.
//
// The report data is the SHA-512 of the concatenation of:
//
//  1. the 26 bytes "conftrace/attest bundle v3" followed by a zero byte;
//  2. IssuedAt, as an 8-byte big-endian integer;
//  3. NotAfter, as an 8-byte big-endian integer;
//  4. the length of KeyConfigs in bytes, as an 8-byte big-endian integer;
//  5. KeyConfigs;
//  6. the length of the canonical policy, as an 8-byte big-endian integer;
//  7. the canonical policy;
//  8. the SHA-256 of Release (of no bytes when there is none), 32 bytes;
//  9. the length of CertificateKey in bytes (0 or 32), as an 8-byte
//     big-endian integer;
//  10. CertificateKey.
//
// The canonical policy is the policy with all insignificant whitespace
// removed (Go's json.Compact), then with '<', '>', '&', U+2028 and U+2029
// inside strings written as \u003c, \u003e, \u0026, \u2028 and \u2029
// (Go's json.HTMLEscape). This is exactly the "policy" value in the JSON of
// a bundle made by [NewBundle] and encoded by json.Marshal. The escaping is
// part of the form because Go's encoding/json applies it whenever it
// encodes a bundle; any other change to the policy (key order, number
// spelling, other escapes) changes the hash.
//
// An auditor can recompute the binding of a bundle saved as bundle.json
// with common tools:
//
//	jq -j .ohttp_keys bundle.json | base64 -d > keys.bin
//	jq -c .policy bundle.json | tr -d '\n' |
//	  sed 's/</\\u003c/g; s/>/\\u003e/g; s/&/\\u0026/g' > policy.json
//	jq -j '.release // ""' bundle.json | base64 -d > release.txt
//	jq -j '.certificate_key // ""' bundle.json | base64 -d > certkey.bin
//	{ printf 'conftrace/attest bundle v3\0'
//	  printf '%016x' $(jq .issued_at bundle.json) | xxd -r -p
//	  printf '%016x' $(jq .not_after bundle.json) | xxd -r -p
//	  printf '%016x' $(wc -c < keys.bin) | xxd -r -p; cat keys.bin
//	  printf '%016x' $(wc -c < policy.json) | xxd -r -p; cat policy.json
//	  sha256sum < release.txt | cut -c1-64 | xxd -r -p
//	  printf '%016x' $(wc -c < certkey.bin) | xxd -r -p; cat certkey.bin
//	} | sha512sum
//
// (jq re-prints the policy; if it spells a number or a string escape
// differently from the bundle, use the bytes of the "policy" value as
// served instead of its output.)
func BindReportData(b Bundle) (ReportData, error) {
	if err := checkValidity(b.IssuedAt, b.NotAfter); err != nil {
		return ReportData{}, err
	}
	if err := checkCertificateKey(b.CertificateKey); err != nil {
		return ReportData{}, err
	}
	canon, err := canonicalPolicy(b.Policy)
	if err != nil {
		return ReportData{}, err
	}
	return bindReportData(b, canon), nil
}

// checkValidity refuses a validity period that no backend issues: an
// empty one, or one before 1970 (which the 8-byte fields cannot hold).
func checkValidity(issuedAt, notAfter int64) error {
	if issuedAt < 0 || notAfter <= issuedAt {
		return fmt.Errorf("attest: bundle valid from %d to %d: want 0 <= issued_at < not_after", issuedAt, notAfter)
	}
	return nil
}

// checkCertificateKey refuses a certificate key that is not empty or an
// Ed25519 public key.
func checkCertificateKey(k ed25519.PublicKey) error {
	if len(k) != 0 && len(k) != ed25519.PublicKeySize {
		return fmt.Errorf("attest: bundle certificate key is %d bytes, want %d (Ed25519) or none", len(k), ed25519.PublicKeySize)
	}
	return nil
}

func bindReportData(b Bundle, canonPolicy []byte) ReportData {
	h := sha512.New()
	h.Write([]byte(bundleLabel))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(b.IssuedAt)))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(b.NotAfter)))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b.KeyConfigs))))
	h.Write(b.KeyConfigs)
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(canonPolicy))))
	h.Write(canonPolicy)
	release := sha256.Sum256(b.Release)
	h.Write(release[:])
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b.CertificateKey))))
	h.Write(b.CertificateKey)
	var rd ReportData
	h.Sum(rd[:0])
	return rd
}

// canonicalPolicy returns policy in the form that BindReportData hashes.
func canonicalPolicy(policy []byte) ([]byte, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, policy); err != nil {
		return nil, fmt.Errorf("attest: bundle policy is not valid JSON: %w", err)
	}
	var canon bytes.Buffer
	json.HTMLEscape(&canon, compact.Bytes())
	return canon.Bytes(), nil
}

// NewBundle asks a for evidence binding b's key configurations (in the
// "application/ohttp-keys" format), policy (a JSON document), validity
// period, release statement and certificate key, and returns b with that evidence and its
// policy in canonical form (see [BindReportData]). b's own Evidence is
// ignored.
func NewBundle(ctx context.Context, a Attester, b Bundle) (Bundle, error) {
	if _, err := ohttp.ParseKeyConfigs(b.KeyConfigs); err != nil {
		return Bundle{}, fmt.Errorf("attest: bundle key configurations: %w", err)
	}
	rd, err := BindReportData(b)
	if err != nil {
		return Bundle{}, err
	}
	ev, err := a.Attest(ctx, rd)
	if err != nil {
		return Bundle{}, fmt.Errorf("attest: attesting bundle: %w", err)
	}
	canon, _ := canonicalPolicy(b.Policy) // BindReportData checked it
	return Bundle{
		Evidence: ev, KeyConfigs: bytes.Clone(b.KeyConfigs), Policy: canon,
		IssuedAt: b.IssuedAt, NotAfter: b.NotAfter, Release: bytes.Clone(b.Release),
		CertificateKey: bytes.Clone(b.CertificateKey),
	}, nil
}

// VerifyBundle checks that b's evidence verifies (see [Verify]), meets exp
// and binds the rest of b, and that b may be used at now: it was issued no
// more than [MaxClockSkew] after now ([ErrBundleNotYetValid]) and now is
// before its NotAfter ([ErrBundleExpired]). It returns what b vouches for.
// If the evidence binds other contents, the error is a [*MismatchError] on
// "report_data". Whether the release statement admits the backend is for
// the caller to judge (see package release).
func VerifyBundle(ctx context.Context, b Bundle, now time.Time, exp Expectations, verifiers ...Verifier) (*VerifiedBundle, error) {
	canon, err := canonicalPolicy(b.Policy)
	if err != nil {
		return nil, err
	}
	want := bindReportData(b, canon)
	id, err := Verify(ctx, b.Evidence, want, exp, verifiers...)
	if me := (*MismatchError)(nil); errors.As(err, &me) && me.Field == "report_data" {
		return nil, &MismatchError{
			Field: "report_data",
			Got:   me.Got + " (bound by the evidence)",
			Want:  fmt.Sprintf("%x (the hash of the bundle's key configurations, policy, validity, release and certificate key, which are not the attested ones)", want[:]),
		}
	}
	if err != nil {
		return nil, err
	}
	if err := checkValidity(b.IssuedAt, b.NotAfter); err != nil {
		return nil, err
	}
	if err := checkCertificateKey(b.CertificateKey); err != nil {
		return nil, err
	}
	issued, notAfter := time.Unix(b.IssuedAt, 0).UTC(), time.Unix(b.NotAfter, 0).UTC()
	if issued.After(now.Add(MaxClockSkew)) {
		return nil, fmt.Errorf("%w: issued at %s, and it is %s", ErrBundleNotYetValid, issued.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !now.Before(notAfter) {
		return nil, fmt.Errorf("%w: valid until %s, and it is %s", ErrBundleExpired, notAfter.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	kcs, err := ohttp.ParseKeyConfigs(b.KeyConfigs)
	if err != nil {
		return nil, fmt.Errorf("attest: attested bundle key configurations: %w", err)
	}
	return &VerifiedBundle{
		Identity: id, KeyConfigs: kcs, Policy: canon,
		IssuedAt: issued, NotAfter: notAfter, Release: bytes.Clone(b.Release),
		CertificateKey: bytes.Clone(b.CertificateKey),
	}, nil
}
