package attest

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/conftrace/conftrace/ohttp"
)

// bundleLabel starts the report data binding of a [Bundle]; it names the
// construction and its version so that the hash can mean nothing else.
const bundleLabel = "conftrace/attest bundle v1\x00"

// Bundle is what a conftrace backend publishes so that clients can decide
// whether to talk to it: TEE evidence, the Oblivious HTTP key
// configurations to encrypt requests to, and the policy the backend
// enforces. The evidence's report data is [BindReportData] of the key
// configurations and the policy, so verified evidence vouches for both.
//
// A Bundle encodes to JSON with the key configurations in base64 and the
// policy as a JSON value that an auditor can read in place.
type Bundle struct {
	// Evidence is the TEE's evidence binding the key configurations and
	// the policy.
	Evidence Evidence `json:"evidence"`
	// KeyConfigs are the Oblivious HTTP key configurations in the
	// "application/ohttp-keys" format of RFC 9458.
	KeyConfigs []byte `json:"ohttp_keys"`
	// Policy is the backend's policy document. Only its bytes matter here:
	// they are hashed in compact form, so whitespace may change in transit
	// but nothing else may.
	Policy json.RawMessage `json:"policy"`
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
}

// BindReportData returns the report data that binds keyConfigs and policy
// into a [Bundle]'s evidence. policy must be valid JSON.
//
// The report data is the SHA-512 of the concatenation of:
//
//  1. the 26 bytes "conftrace/attest bundle v1" followed by a zero byte;
//  2. the length of keyConfigs in bytes, as an 8-byte big-endian integer;
//  3. keyConfigs;
//  4. the length of the canonical policy, as an 8-byte big-endian integer;
//  5. the canonical policy.
//
// The canonical policy is policy with all insignificant whitespace removed
// (Go's json.Compact), then with '<', '>', '&', U+2028 and U+2029 inside
// strings written as \u003c, \u003e, \u0026, \u2028 and \u2029 (Go's
// json.HTMLEscape). This is exactly the "policy" value in the JSON of a
// bundle made by [NewBundle] and encoded by json.Marshal. The escaping is part of the form because Go's
// encoding/json applies it whenever it encodes a bundle; any other change to
// the policy (key order, number spelling, other escapes) changes the hash.
//
// An auditor can recompute the binding of a bundle saved as bundle.json
// with common tools:
//
//	jq -j .ohttp_keys bundle.json | base64 -d > keys.bin
//	jq -c .policy bundle.json | tr -d '\n' |
//	  sed 's/</\\u003c/g; s/>/\\u003e/g; s/&/\\u0026/g' > policy.json
//	{ printf 'conftrace/attest bundle v1\0'
//	  printf '%016x' $(wc -c < keys.bin) | xxd -r -p; cat keys.bin
//	  printf '%016x' $(wc -c < policy.json) | xxd -r -p; cat policy.json
//	} | sha512sum
//
// (jq re-prints the policy; if it spells a number or a string escape
// differently from the bundle, use the bytes of the "policy" value as
// served instead of its output.)
func BindReportData(keyConfigs, policy []byte) (ReportData, error) {
	canon, err := canonicalPolicy(policy)
	if err != nil {
		return ReportData{}, err
	}
	return bindReportData(keyConfigs, canon), nil
}

func bindReportData(keyConfigs, canonPolicy []byte) ReportData {
	h := sha512.New()
	h.Write([]byte(bundleLabel))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(keyConfigs))))
	h.Write(keyConfigs)
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(canonPolicy))))
	h.Write(canonPolicy)
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

// NewBundle asks a for evidence binding keyConfigs (in the
// "application/ohttp-keys" format) and policy (a JSON document), and
// returns the bundle to publish. The bundle holds the policy in canonical
// form (see [BindReportData]).
func NewBundle(ctx context.Context, a Attester, keyConfigs, policy []byte) (Bundle, error) {
	if _, err := ohttp.ParseKeyConfigs(keyConfigs); err != nil {
		return Bundle{}, fmt.Errorf("attest: bundle key configurations: %w", err)
	}
	canon, err := canonicalPolicy(policy)
	if err != nil {
		return Bundle{}, err
	}
	ev, err := a.Attest(ctx, bindReportData(keyConfigs, canon))
	if err != nil {
		return Bundle{}, fmt.Errorf("attest: attesting bundle: %w", err)
	}
	return Bundle{Evidence: ev, KeyConfigs: bytes.Clone(keyConfigs), Policy: canon}, nil
}

// VerifyBundle checks that b's evidence verifies (see [Verify]), meets exp
// and binds b's key configurations and policy, and returns what it vouches
// for. If the evidence binds other key configurations or another policy,
// the error is a [*MismatchError] on "report_data".
func VerifyBundle(ctx context.Context, b Bundle, exp Expectations, verifiers ...Verifier) (*VerifiedBundle, error) {
	canon, err := canonicalPolicy(b.Policy)
	if err != nil {
		return nil, err
	}
	want := bindReportData(b.KeyConfigs, canon)
	id, err := Verify(ctx, b.Evidence, want, exp, verifiers...)
	if me := (*MismatchError)(nil); errors.As(err, &me) && me.Field == "report_data" {
		return nil, &MismatchError{
			Field: "report_data",
			Got:   me.Got + " (bound by the evidence)",
			Want:  fmt.Sprintf("%x (the hash of the bundle's key configurations and policy, which are not the attested ones)", want[:]),
		}
	}
	if err != nil {
		return nil, err
	}
	kcs, err := ohttp.ParseKeyConfigs(b.KeyConfigs)
	if err != nil {
		return nil, fmt.Errorf("attest: attested bundle key configurations: %w", err)
	}
	return &VerifiedBundle{Identity: id, KeyConfigs: kcs, Policy: canon}, nil
}
