// Package keyrelease moves the storage key-encryption key (KEK) from a
// replica that holds it to one that needs it, and only between attested
// TEEs: path (a) of docs/key-release.md.
//
// A new replica N asks a live one, P, for a fresh nonce, makes an ephemeral
// HPKE key pair, and sends P its evidence binding the nonce, the public
// key, the SHA-256 of its policy and of its release statement. P verifies
// the evidence with the rules phones use for the platform (no debug, the
// TCB its policy accepts, simulation only between simulated replicas) and
// admits the code by [Rule]: the same measurement and policy as its own, or
// a successor that its policy's governance set signed a release statement
// for, with a sequence number not below P's. P then seals the KEK to N's
// key and answers with its own evidence binding the nonce and the sealed
// KEK, which N verifies by the same rule (a predecessor is admitted with
// any sequence number) before it uses the key: without that check the
// host could hand N a key of its own choosing.
//
// The channel is the host's network and needs no protection of its own:
// the host can block a release, not read or alter one. Nonces are single
// use and expire after [NonceLifetime], so recorded evidence does not
// replay.
package keyrelease

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/release"
)

const (
	// NonceSize is the size of a release's nonce.
	NonceSize = 32
	// KEKSize is the size of the key released.
	KEKSize = 32
	// NonceLifetime is how long a nonce can be used, once.
	NonceLifetime = time.Minute
)

// Errors of a refused release, wrapped with details.
var (
	// ErrNotAdmitted: the other replica's code or policy is neither this
	// one's nor a successor (or predecessor) its governance set signed.
	ErrNotAdmitted = errors.New("keyrelease: code not admitted")
	// ErrNonce: the nonce is unknown, used or expired.
	ErrNonce = errors.New("keyrelease: unknown, used or expired nonce")
	// ErrBusy: too many nonces are outstanding; ask again later.
	ErrBusy = errors.New("keyrelease: too many releases in progress")
	// ErrUnreachable: the peer did not answer the request for a nonce,
	// before anything was proven either way.
	ErrUnreachable = errors.New("keyrelease: the peer did not give a nonce")
)

// The HPKE suite that carries the KEK: post-quantum hybrid, like the
// Oblivious HTTP keys.
var (
	kem  = hpke.MLKEM768X25519()
	kdf  = hpke.HKDFSHA256()
	aead = hpke.AES256GCM()
)

// Self is what a replica knows of itself and how it judges the other side.
type Self struct {
	// Attester produces this replica's evidence.
	Attester attest.Attester
	// Verifiers check the other replica's evidence.
	Verifiers []attest.Verifier
	// Expect judges the other replica's platform (debug, TCB, simulation).
	// Its code fields are not used: [Rule] decides which code is admitted.
	Expect attest.Expectations
	// Identity is this replica's own identity, as its evidence proves it
	// (see [Identify]).
	Identity attest.Identity
	// PolicySHA256 is the SHA-256 of this replica's canonical policy.
	PolicySHA256 [sha256.Size]byte
	// Release is this replica's release statement file; empty for none.
	Release []byte
	// Governance is the set its policy names to admit successors; nil
	// admits only the same measurement and policy.
	Governance *release.Governance
}

// Request is what a replica sends to obtain the KEK.
type Request struct {
	Nonce        []byte          `json:"nonce"`
	PublicKey    []byte          `json:"public_key"`
	Evidence     attest.Evidence `json:"evidence"`
	PolicySHA256 []byte          `json:"policy_sha256"`
	Release      []byte          `json:"release,omitempty"`
}

// Response carries the KEK sealed to the requester, the store heads the
// releasing replica wrote (so that the requester can refuse an older copy
// of the store), and the releasing replica's evidence, which binds both.
type Response struct {
	Sealed       []byte          `json:"sealed"`
	Heads        Heads           `json:"heads,omitempty"`
	Evidence     attest.Evidence `json:"evidence"`
	PolicySHA256 []byte          `json:"policy_sha256"`
	Release      []byte          `json:"release,omitempty"`
}

// Heads are store heads a replica wrote, by the run that wrote them
// (package enclave's HeadID, in hexadecimal).
type Heads map[string]uint64

// digest is the SHA-256 of h in a canonical form: runs sorted.
func (h Heads) digest() [sha256.Size]byte {
	d := sha256.New()
	for _, id := range slices.Sorted(maps.Keys(h)) {
		writeField(d, []byte(id))
		d.Write(binary.BigEndian.AppendUint64(nil, h[id]))
	}
	return [sha256.Size]byte(d.Sum(nil))
}

// requestData is what a requester's evidence binds.
func requestData(nonce, pub, policySHA256, releaseFile []byte) attest.ReportData {
	h := sha512.New()
	h.Write([]byte("conftrace kek-release request v1\x00"))
	writeField(h, nonce)
	writeField(h, pub)
	writeField(h, policySHA256)
	r := sha256.Sum256(releaseFile)
	h.Write(r[:])
	return attest.ReportData(h.Sum(nil))
}

// responseData is what the releasing replica's evidence binds.
func responseData(nonce, sealed []byte, heads Heads, policySHA256, releaseFile []byte) attest.ReportData {
	h := sha512.New()
	h.Write([]byte("conftrace kek-release response v1\x00"))
	writeField(h, nonce)
	s := sha256.Sum256(sealed)
	h.Write(s[:])
	hd := heads.digest()
	h.Write(hd[:])
	writeField(h, policySHA256)
	r := sha256.Sum256(releaseFile)
	h.Write(r[:])
	return attest.ReportData(h.Sum(nil))
}

// writeField writes b with its length, so that fields cannot run into
// each other.
func writeField(h interface{ Write([]byte) (int, error) }, b []byte) {
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b))))
	h.Write(b)
}

// info is the HPKE info of the release under nonce.
func info(nonce []byte) []byte {
	return append([]byte("conftrace kek-release v1\x00"), nonce...)
}

// Rule reports whether self admits the other replica of identity id,
// which enforces the policy hashing to policySHA256 under the release
// statement file releaseFile: the same code and policy as self's, or code
// and policy that a statement every member of self's governance set signed
// admits, with a sequence number of at least minSequence.
func (s Self) Rule(id attest.Identity, policySHA256 []byte, releaseFile []byte, minSequence uint64) error {
	if len(policySHA256) != sha256.Size {
		return fmt.Errorf("%w: a policy hash of %d bytes", ErrNotAdmitted, len(policySHA256))
	}
	if sameCode(id, s.Identity) && bytes.Equal(policySHA256, s.PolicySHA256[:]) {
		return nil
	}
	if s.Governance == nil {
		return fmt.Errorf("%w: measurement %x with policy %x is not this replica's, and its policy names no governance set to admit another", ErrNotAdmitted, id.Measurement, policySHA256)
	}
	if _, err := s.Governance.Admit(releaseFile, id, [sha256.Size]byte(policySHA256), minSequence); err != nil {
		return fmt.Errorf("%w: %w", ErrNotAdmitted, err)
	}
	return nil
}

// sameCode reports whether a and b identify the same code: every field
// that says which code runs, which on TDX includes the runtime registers
// (MRTD alone names only the firmware) and on SNP the host data.
func sameCode(a, b attest.Identity) bool {
	eq := bytes.Equal
	for i := range a.RTMRs {
		if !eq(a.RTMRs[i], b.RTMRs[i]) {
			return false
		}
	}
	return a.TEE == b.TEE && eq(a.Measurement, b.Measurement) && eq(a.Signer, b.Signer) &&
		a.ProductID == b.ProductID && a.SVN == b.SVN &&
		eq(a.MRConfigID, b.MRConfigID) && eq(a.HostData, b.HostData)
}

// verify checks the other side's evidence against rd, its platform against
// s.Expect, and its code by Rule.
func (s Self) verify(ctx context.Context, ev attest.Evidence, rd attest.ReportData, policySHA256, releaseFile []byte, minSequence uint64) (attest.Identity, error) {
	exp := s.Expect
	exp.Measurements, exp.Signers, exp.ProductID, exp.MinSVN = nil, nil, nil, 0
	id, err := attest.Verify(ctx, ev, rd, exp, s.Verifiers...)
	if err != nil {
		return attest.Identity{}, fmt.Errorf("keyrelease: the other replica's evidence: %w", err)
	}
	if err := s.Rule(id, policySHA256, releaseFile, minSequence); err != nil {
		return attest.Identity{}, err
	}
	return id, nil
}

// sequence is the sequence number of s's own release statement, 0 without
// one.
func (s Self) sequence() (uint64, error) {
	if len(s.Release) == 0 {
		return 0, nil
	}
	r, err := release.Parse(s.Release)
	if err != nil {
		return 0, fmt.Errorf("keyrelease: own release statement: %w", err)
	}
	return r.Statement.Sequence, nil
}
