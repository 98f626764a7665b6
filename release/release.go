// Package release decides which builds of the conftrace backend, under
// which policy, a phone accepts, so that the backend can be upgraded without
// re-pinning every phone while its operator still cannot run other code or
// change the policy at will.
//
// A phone pins a [Governance] set: the Ed25519 public keys of a few parties
// its users trust to vet releases, such as the health authority and an
// independent auditor. Each release of the backend, a build together with
// the policy it enforces, gets a [Statement] that names
//
//   - a sequence number, raised with every release;
//   - the kind of TEE the build runs in;
//   - the code it admits: exact measurements or, for SGX, the signer
//     identity (MRSIGNER, product ID and lowest security version);
//   - the SHA-256 of the canonical policy that code must enforce.
//
// Every member signs the statement ([Sign], then [Cosign] for each other
// member). The backend is started with the signed statement; its
// attestation bundle carries the statement and its evidence binds the
// statement's hash, so every release phones accept is visible in what they
// verify. A phone accepts a backend only if [Governance.Admit] passes: every
// member signed, the statement admits the attested identity and policy, and
// its sequence number is not below the highest the phone accepted before, so
// the operator cannot roll back to an older, vulnerable release either.
//
// The statement lives outside the measured image, so it does not change the
// measurement it names: on SGX, where the policy file is part of MRENCLAVE,
// a policy naming its own successor would. [Governance.Admit] judges the
// code and the policy only; whether the platform is trustworthy (debug mode,
// TCB status) is for attest.Expectations.
//
// # File formats
//
// A release file is ASCII text of lines ending in a line feed: the statement,
// then one signature line per signer, in ascending order of public key. The
// statement's lines come in this order, each exactly once unless said:
//
//	conftrace release v1
//	sequence 7                 decimal, 1 or more, no leading zeros
//	tee sgx                    sim, sgx, tdx or snp
//	measurement <hex>          one or more, ascending; 32 bytes (sim, sgx)
//	                           or 48 bytes (tdx, snp)
//	tdx-rtmr <i> <hex>         on tdx only, at least RTMR 1: RTMR i (0 to
//	                           3, in ascending order, each once), 48 bytes
//	sgx-mrsigner <hex>         or, on sgx only, instead of measurements:
//	sgx-product-id 1           the signer identity, 32 bytes, and two
//	sgx-min-svn 3              decimal numbers 0 to 65535
//	policy-sha256 <hex>        32 bytes
//	note <text>                optional: printable ASCII, 1 to 200 bytes
//	signature <key> <sig>      32-byte Ed25519 public key, 64-byte signature
//
// Hex is lowercase. A signature is a plain Ed25519 (RFC 8032) signature of
// the statement's bytes, from "conftrace" up to and including the line feed
// that ends its last line, so any Ed25519 tool can check it. Every value has
// one spelling, so a statement has one encoding: [Parse] refuses any other,
// and two files that carry the same statement and signatures are the same
// bytes (the bundle binds their hash).
//
// A governance file lists the members:
//
//	conftrace governance v1
//	member health-authority <hex>   a name and a 32-byte Ed25519 public key
//	member auditor <hex>
//
//	gov, err := release.ParseGovernance(governanceFile)
//	st, err := gov.Admit(releaseFile, verified.Identity, sha256.Sum256(verified.Policy), highestSeen)
package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/conftrace/conftrace/attest"
)

// Version is the format of the release and governance files this package
// reads and writes.
const Version = 1

const statementHeader = "conftrace release v1"

// MaxFileSize bounds a release or governance file.
const MaxFileSize = 64 << 10

// Limits of a statement.
const (
	maxMeasurements = 16
	maxNote         = 200
)

// Statement is what the governance members sign about one release.
type Statement struct {
	// Sequence orders the statements of a deployment: each release gets a
	// higher one, and phones refuse one below the highest they accepted.
	Sequence uint64
	// TEE is the kind of TEE the admitted code runs in.
	TEE attest.TEE
	// Measurements admits code by exact measurement (MRENCLAVE, MRTD, SNP
	// launch digest, or the sim executable's hash). Either Measurements
	// or Signer is set, not both.
	Measurements [][]byte
	// RTMRs, on TDX, admits only code whose runtime measurement registers
	// hold these values (nil entries accept any): MRTD measures only the
	// firmware, and the kernel, its command line and the initrd that holds
	// conftraced are measured into RTMR 1 and 2 (deploy/tdx).
	RTMRs [attest.RTMRCount][]byte
	// Signer admits SGX enclaves by who signed them: MRSIGNER, with the
	// product ID and at least the security version below. It trusts the
	// holder of the enclave signing key with the code, so use it only
	// when that key is under the governance members' control.
	Signer    []byte
	ProductID uint16
	MinSVN    uint16
	// PolicySHA256 is the SHA-256 of the canonical policy the code must
	// enforce: the policy as the attestation bundle carries it.
	PolicySHA256 [sha256.Size]byte
	// Note says what the release is, for people ("conftrace v1.4.2,
	// commit 3f2a…"); it is signed like the rest.
	Note string
}

// Errors of [Governance.Admit] and [Statement.Admits], wrapped with details.
var (
	// ErrNoRelease: the bundle carries no release statement.
	ErrNoRelease = errors.New("release: no release statement")
	// ErrMissingSignature: a governance member did not sign.
	ErrMissingSignature = errors.New("release: not signed by every governance member")
	// ErrRollback: the statement's sequence number is below the highest
	// already accepted.
	ErrRollback = errors.New("release: statement older than one already accepted")
	// ErrCodeNotAdmitted: the attested code is not what the statement admits.
	ErrCodeNotAdmitted = errors.New("release: code not admitted by the statement")
	// ErrPolicyNotAdmitted: the policy is not the one the statement names.
	ErrPolicyNotAdmitted = errors.New("release: policy not admitted by the statement")
)

// Validate reports the first rule the statement breaks.
func (s Statement) Validate() error {
	if s.Sequence == 0 {
		return errors.New("release: sequence number 0: want 1 or more")
	}
	size, err := measurementSize(s.TEE)
	if err != nil {
		return err
	}
	switch {
	case len(s.Measurements) > 0 && s.Signer != nil:
		return errors.New("release: a statement admits code by measurements or by SGX signer, not both")
	case len(s.Measurements) == 0 && s.Signer == nil:
		return errors.New("release: a statement must admit code: measurements or an SGX signer")
	case len(s.Measurements) > maxMeasurements:
		return fmt.Errorf("release: %d measurements, at most %d", len(s.Measurements), maxMeasurements)
	case s.Signer != nil && s.TEE != attest.SGX:
		return fmt.Errorf("release: a signer identity admits SGX enclaves only, not %s", s.TEE)
	case s.Signer != nil && len(s.Signer) != sha256.Size:
		return fmt.Errorf("release: MRSIGNER is %d bytes, want %d", len(s.Signer), sha256.Size)
	}
	if s.TEE == attest.TDX && s.RTMRs[1] == nil {
		// MRTD measures the firmware only: without RTMR 1, the statement
		// would admit whatever that firmware boots.
		return errors.New("release: a TDX statement must pin RTMR 1, which measures the image holding conftraced (deploy/tdx)")
	}
	for i, r := range s.RTMRs {
		switch {
		case r == nil:
		case s.TEE != attest.TDX:
			return fmt.Errorf("release: RTMRs pin TDX guests only, not %s", s.TEE)
		case len(r) != rtmrSize:
			return fmt.Errorf("release: RTMR %d is %d bytes, want %d", i, len(r), rtmrSize)
		}
	}
	for i, m := range s.Measurements {
		if len(m) != size {
			return fmt.Errorf("release: a %s measurement is %d bytes, want %d", s.TEE, len(m), size)
		}
		if i > 0 && bytes.Compare(s.Measurements[i-1], m) >= 0 {
			return errors.New("release: measurements must ascend, each listed once")
		}
	}
	if n := len(s.Note); n > maxNote || n > 0 && !printable(s.Note) {
		return fmt.Errorf("release: the note must be 1 to %d bytes of printable ASCII", maxNote)
	}
	return nil
}

// rtmrSize is the size of a TDX runtime measurement register (SHA-384).
const rtmrSize = 48

func measurementSize(t attest.TEE) (int, error) {
	switch t {
	case attest.Sim, attest.SGX:
		return 32, nil
	case attest.TDX, attest.SNP:
		return 48, nil
	}
	return 0, fmt.Errorf("release: TEE %q: want %s, %s, %s or %s", t, attest.Sim, attest.SGX, attest.TDX, attest.SNP)
}

func printable(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Marshal returns the statement's text, the bytes its members sign. The
// measurements are written in ascending order.
func (s Statement) Marshal() ([]byte, error) {
	s.Measurements = slices.SortedFunc(slices.Values(s.Measurements), bytes.Compare)
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nsequence %d\ntee %s\n", statementHeader, s.Sequence, s.TEE)
	for _, m := range s.Measurements {
		fmt.Fprintf(&b, "measurement %x\n", m)
	}
	for i, r := range s.RTMRs {
		if r != nil {
			fmt.Fprintf(&b, "tdx-rtmr %d %x\n", i, r)
		}
	}
	if s.Signer != nil {
		fmt.Fprintf(&b, "sgx-mrsigner %x\nsgx-product-id %d\nsgx-min-svn %d\n", s.Signer, s.ProductID, s.MinSVN)
	}
	fmt.Fprintf(&b, "policy-sha256 %x\n", s.PolicySHA256)
	if s.Note != "" {
		fmt.Fprintf(&b, "note %s\n", s.Note)
	}
	return b.Bytes(), nil
}

// Admits reports whether the statement admits code of identity id
// enforcing the policy whose canonical form hashes to policySHA256. The
// error wraps [ErrCodeNotAdmitted] or [ErrPolicyNotAdmitted]. It judges the
// code only: debug mode and the platform's TCB are for attest.Expectations.
func (s Statement) Admits(id attest.Identity, policySHA256 [sha256.Size]byte) error {
	switch {
	case id.TEE != s.TEE:
		return fmt.Errorf("%w: it admits %s code, the backend runs in %s", ErrCodeNotAdmitted, s.TEE, id.TEE)
	case len(s.Measurements) > 0 && !slices.ContainsFunc(s.Measurements, func(m []byte) bool { return bytes.Equal(m, id.Measurement) }):
		return fmt.Errorf("%w: measurement %x is not among the %d it lists", ErrCodeNotAdmitted, id.Measurement, len(s.Measurements))
	case !rtmrsMatch(s.RTMRs, id.RTMRs):
		return fmt.Errorf("%w: its TDX runtime measurement registers are not those the statement pins", ErrCodeNotAdmitted)
	case s.Signer != nil && !bytes.Equal(id.Signer, s.Signer):
		return fmt.Errorf("%w: MRSIGNER %x, it admits %x", ErrCodeNotAdmitted, id.Signer, s.Signer)
	case s.Signer != nil && id.ProductID != s.ProductID:
		return fmt.Errorf("%w: product ID %d, it admits %d", ErrCodeNotAdmitted, id.ProductID, s.ProductID)
	case s.Signer != nil && id.SVN < s.MinSVN:
		return fmt.Errorf("%w: security version %d, it admits %d or later", ErrCodeNotAdmitted, id.SVN, s.MinSVN)
	case policySHA256 != s.PolicySHA256:
		return fmt.Errorf("%w: the policy's SHA-256 is %x, it admits %x", ErrPolicyNotAdmitted, policySHA256, s.PolicySHA256)
	}
	return nil
}

// rtmrsMatch reports whether got holds every register want pins.
func rtmrsMatch(want, got [attest.RTMRCount][]byte) bool {
	for i, w := range want {
		if w != nil && !bytes.Equal(w, got[i]) {
			return false
		}
	}
	return true
}

// Signature is one signer's signature of a statement.
type Signature struct {
	PublicKey ed25519.PublicKey
	Signature []byte
}

// Release is a parsed release file: a statement and the signatures it
// carries, each of which verified.
type Release struct {
	Statement  Statement
	Signatures []Signature // ascending by public key
	body       []byte      // the statement's bytes, as signed
}

// SignedBy reports whether r carries a valid signature by pub.
func (r *Release) SignedBy(pub ed25519.PublicKey) bool {
	return slices.ContainsFunc(r.Signatures, func(s Signature) bool { return s.PublicKey.Equal(pub) })
}

// Marshal returns the release file.
func (r *Release) Marshal() []byte {
	b := bytes.Clone(r.body)
	for _, s := range r.Signatures {
		b = fmt.Appendf(b, "signature %x %x\n", []byte(s.PublicKey), s.Signature)
	}
	return b
}

// Sign returns the release file of st signed by k.
func Sign(st Statement, k *Key) ([]byte, error) {
	body, err := st.Marshal()
	if err != nil {
		return nil, err
	}
	r := &Release{Statement: st, body: body}
	r.add(k)
	return r.Marshal(), nil
}

// Cosign adds k's signature to the release file f, whose signatures must
// all verify. Signing twice changes nothing.
func Cosign(f []byte, k *Key) ([]byte, error) {
	r, err := Parse(f)
	if err != nil {
		return nil, err
	}
	if !r.SignedBy(k.PublicKey()) {
		r.add(k)
	}
	return r.Marshal(), nil
}

func (r *Release) add(k *Key) {
	r.Signatures = append(r.Signatures, Signature{PublicKey: k.PublicKey(), Signature: ed25519.Sign(k.priv, r.body)})
	slices.SortFunc(r.Signatures, func(a, b Signature) int { return bytes.Compare(a.PublicKey, b.PublicKey) })
}

// Parse reads a release file strictly: the statement must be valid and in
// its one encoding, and it must carry at least one signature, every one of
// which verifies. Who signed is for [Governance.Verify] to judge.
func Parse(f []byte) (*Release, error) {
	if len(f) > MaxFileSize {
		return nil, fmt.Errorf("release: file of %d bytes, at most %d", len(f), MaxFileSize)
	}
	lines, err := splitLines(f)
	if err != nil {
		return nil, err
	}
	n := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "signature ") })
	if n < 0 {
		return nil, errors.New("release: no signature")
	}
	st, err := parseStatement(lines[:n])
	if err != nil {
		return nil, err
	}
	body, err := st.Marshal()
	if err != nil {
		return nil, err
	}
	r := &Release{Statement: st, body: body}
	for _, l := range lines[n:] {
		s, err := parseSignature(l)
		if err != nil {
			return nil, err
		}
		if !ed25519.Verify(s.PublicKey, body, s.Signature) {
			return nil, fmt.Errorf("release: the signature by %x does not verify", []byte(s.PublicKey))
		}
		r.Signatures = append(r.Signatures, s)
	}
	// One encoding only: what was read must be exactly what Marshal
	// writes (lowercase hex, canonical numbers, signatures in order).
	if !bytes.Equal(r.Marshal(), f) {
		return nil, errors.New("release: not in canonical form (lowercase hex, plain decimal numbers, measurements and signatures in ascending order, each once)")
	}
	return r, nil
}

// splitLines splits printable ASCII text whose every line ends in a line
// feed, refusing empty lines.
func splitLines(f []byte) ([]string, error) {
	if len(f) == 0 || f[len(f)-1] != '\n' {
		return nil, errors.New("release: the file must end with a line feed")
	}
	lines := strings.Split(string(f[:len(f)-1]), "\n")
	for i, l := range lines {
		if l == "" || !printable(l) {
			return nil, fmt.Errorf("release: line %d is empty or not printable ASCII", i+1)
		}
	}
	return lines, nil
}

// fields reads lines of "key value", in order.
type fields struct {
	lines []string
	i     int
}

// next returns the value of the next line if its key is key.
func (f *fields) next(key string) (string, bool) {
	if f.i >= len(f.lines) {
		return "", false
	}
	k, v, ok := strings.Cut(f.lines[f.i], " ")
	if !ok || k != key {
		return "", false
	}
	f.i++
	return v, true
}

func (f *fields) need(key string) (string, error) {
	v, ok := f.next(key)
	if !ok {
		return "", fmt.Errorf("release: line %d: want %q", f.i+1, key)
	}
	return v, nil
}

func parseStatement(lines []string) (Statement, error) {
	if len(lines) == 0 || lines[0] != statementHeader {
		return Statement{}, fmt.Errorf("release: the file must begin with %q", statementHeader)
	}
	f := &fields{lines: lines, i: 1}
	var st Statement
	v, err := f.need("sequence")
	if err != nil {
		return st, err
	}
	if st.Sequence, err = strconv.ParseUint(v, 10, 64); err != nil {
		return st, fmt.Errorf("release: sequence %q: %w", v, err)
	}
	if v, err = f.need("tee"); err != nil {
		return st, err
	}
	st.TEE = attest.TEE(v)
	for {
		v, ok := f.next("measurement")
		if !ok {
			break
		}
		m, err := hex.DecodeString(v)
		if err != nil {
			return st, fmt.Errorf("release: measurement %q: %w", v, err)
		}
		st.Measurements = append(st.Measurements, m)
	}
	if err := parseRTMRs(f, &st); err != nil {
		return st, err
	}
	if err := parseSigner(f, &st); err != nil {
		return st, err
	}
	if v, err = f.need("policy-sha256"); err != nil {
		return st, err
	}
	h, err := hex.DecodeString(v)
	if err != nil || len(h) != sha256.Size {
		return st, fmt.Errorf("release: policy-sha256 %q: want %d bytes of hex", v, sha256.Size)
	}
	st.PolicySHA256 = [sha256.Size]byte(h)
	if v, ok := f.next("note"); ok {
		st.Note = v
	}
	if f.i < len(lines) {
		return st, fmt.Errorf("release: line %d: unexpected %q", f.i+1, lines[f.i])
	}
	return st, st.Validate()
}

// parseRTMRs reads the TDX runtime measurement registers the statement
// pins, if any; Parse's canonical-form check refuses them out of order.
func parseRTMRs(f *fields, st *Statement) error {
	for {
		v, ok := f.next("tdx-rtmr")
		if !ok {
			return nil
		}
		is, hx, _ := strings.Cut(v, " ")
		i, err := strconv.Atoi(is)
		if err != nil || i < 0 || i >= attest.RTMRCount {
			return fmt.Errorf("release: tdx-rtmr %q: want an index 0 to %d and hex", v, attest.RTMRCount-1)
		}
		if st.RTMRs[i] != nil {
			return fmt.Errorf("release: tdx-rtmr %d listed twice", i)
		}
		r, err := hex.DecodeString(hx)
		if err != nil || len(r) != rtmrSize {
			return fmt.Errorf("release: tdx-rtmr %d %q: want %d bytes of hex", i, hx, rtmrSize)
		}
		st.RTMRs[i] = r
	}
}

// parseSigner reads the SGX signer identity, if the statement has one.
func parseSigner(f *fields, st *Statement) error {
	v, ok := f.next("sgx-mrsigner")
	if !ok {
		return nil
	}
	s, err := hex.DecodeString(v)
	if err != nil {
		return fmt.Errorf("release: sgx-mrsigner %q: %w", v, err)
	}
	st.Signer = s
	for _, p := range []struct {
		key string
		n   *uint16
	}{{"sgx-product-id", &st.ProductID}, {"sgx-min-svn", &st.MinSVN}} {
		v, err := f.need(p.key)
		if err != nil {
			return err
		}
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return fmt.Errorf("release: %s %q: %w", p.key, v, err)
		}
		*p.n = uint16(n)
	}
	return nil
}

func parseSignature(l string) (Signature, error) {
	parts := strings.Split(l, " ")
	if len(parts) != 3 || parts[0] != "signature" {
		return Signature{}, fmt.Errorf("release: %q: want \"signature KEY SIG\"", l)
	}
	pub, err := hex.DecodeString(parts[1])
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return Signature{}, fmt.Errorf("release: signature key %q: want %d bytes of hex", parts[1], ed25519.PublicKeySize)
	}
	sig, err := hex.DecodeString(parts[2])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Signature{}, fmt.Errorf("release: signature %q: want %d bytes of hex", parts[2], ed25519.SignatureSize)
	}
	return Signature{PublicKey: pub, Signature: sig}, nil
}
