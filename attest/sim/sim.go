// Package sim verifies the evidence of conftrace's simulated TEE.
//
// SIMULATED EVIDENCE PROVES NOTHING. It is signed by an ordinary Ed25519
// "platform" key that lives in software, so anyone can produce sim evidence
// claiming any measurement and any report data with a key of their own. A
// backend that presents sim evidence may be running any code, and its
// operator can read everything it holds. Never accept it from a backend that
// handles real people's data.
//
// The simulated TEE exists so that the whole of conftrace — attestation,
// Oblivious HTTP keyed by attested configurations, sealed storage — runs on
// a laptop and in CI: for development, for tests and for the demo. It
// exercises the same code paths as a real TEE, and the evidence carries the
// same claims (a measurement, 64 bytes of report data, a debug flag), so the
// client code that checks them is the code that will check real hardware
// evidence.
//
// Because accepting sim evidence by mistake would silently remove every
// guarantee, it is refused twice by default. [attest.Verify] refuses it
// unless the caller's [attest.Expectations] set AllowSimulated, and the
// zero [Verifier] refuses it too, with an error wrapping
// [attest.ErrSimulated]; a verifier that accepts it must be built with
// [NewVerifier] and [VerifierOptions.AllowSimulated]:
//
//	v := sim.NewVerifier(sim.VerifierOptions{AllowSimulated: true})
//	id, err := attest.Verify(ctx, ev, reportData,
//		attest.Expectations{AllowSimulated: true, Measurements: want}, v)
//
// A test or a demo that knows which simulated platform it talks to can also
// pin its public key ([VerifierOptions.PlatformKeys]), which at least stops
// evidence signed by some other key.
//
// # Evidence format
//
// Sim evidence (the Data of an [attest.Evidence] whose TEE is [attest.Sim])
// is exactly [EvidenceSize] bytes:
//
//	offset  size  field
//	     0     4  magic "CTSE"
//	     4     1  version, 1
//	     5     1  flags: bit 0 set if debug; the other bits must be zero
//	     6    32  platform Ed25519 public key
//	    38    32  measurement (SHA-256 of the running executable)
//	    70    64  report data
//	   134    64  Ed25519 signature
//
// The signature is a plain Ed25519 (RFC 8032) signature by the platform key
// over the ASCII string "conftrace attest/sim evidence v1", a zero byte, and
// the first 134 bytes of the evidence (everything but the signature). Sim
// evidence has no collateral.
package sim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/conftrace/conftrace/attest"
)

// EvidenceSize is the size in bytes of encoded sim evidence: 198.
const EvidenceSize = bodySize + ed25519.SignatureSize

// Version is the version of the sim evidence format that this package
// produces and accepts.
const Version = 1

const (
	magic      = "CTSE"
	signLabel  = "conftrace attest/sim evidence v1\x00"
	headerSize = len(magic) + 2
	bodySize   = headerSize + ed25519.PublicKeySize + sha256.Size + attest.ReportDataSize
	flagDebug  = 1 << 0
)

// Errors returned by [Parse] and [Verifier.Verify], wrapped with details.
var (
	// ErrTruncated means the evidence is shorter than [EvidenceSize].
	ErrTruncated = errors.New("sim: evidence truncated")
	// ErrMalformed means the evidence is not in the sim evidence format:
	// wrong magic, unknown version, reserved flags set, trailing bytes, or
	// unexpected collateral.
	ErrMalformed = errors.New("sim: malformed evidence")
	// ErrBadSignature means the platform key's signature does not verify.
	ErrBadSignature = errors.New("sim: bad evidence signature")
	// ErrUnknownPlatform means the evidence is signed by a platform key
	// that the verifier was not told to accept.
	ErrUnknownPlatform = errors.New("sim: evidence signed by a platform key that is not pinned")
)

// Claims are what sim evidence states about the code that produced it.
type Claims struct {
	// Measurement is the SHA-256 of the executable that asked for the
	// evidence.
	Measurement [sha256.Size]byte
	// ReportData is the data the code chose to bind into the evidence.
	ReportData attest.ReportData
	// Debug marks evidence from a TEE that claims to run in debug mode.
	Debug bool
}

// Evidence is parsed sim evidence whose signature has been checked against
// the platform key it carries. That proves only that the holder of
// PlatformKey signed the claims, not who that is.
type Evidence struct {
	// PlatformKey is the Ed25519 public key that signed the evidence.
	PlatformKey ed25519.PublicKey
	Claims
}

// Sign returns sim evidence for c signed by the platform key key. It fails
// only if key is not an Ed25519 private key.
func Sign(key ed25519.PrivateKey, c Claims) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("sim: platform private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	b := appendBody(make([]byte, 0, EvidenceSize), pub, c)
	return append(b, ed25519.Sign(key, signedMessage(b))...), nil
}

// appendBody appends the unsigned part of the evidence to b.
func appendBody(b []byte, pub ed25519.PublicKey, c Claims) []byte {
	var flags byte
	if c.Debug {
		flags |= flagDebug
	}
	b = append(b, magic...)
	b = append(b, Version, flags)
	b = append(b, pub...)
	b = append(b, c.Measurement[:]...)
	return append(b, c.ReportData[:]...)
}

func signedMessage(body []byte) []byte {
	return append([]byte(signLabel), body...)
}

// Parse decodes sim evidence and checks its signature against the platform
// key it carries. It returns an error wrapping [ErrTruncated],
// [ErrMalformed] or [ErrBadSignature].
func Parse(data []byte) (*Evidence, error) {
	if len(data) < EvidenceSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrTruncated, len(data), EvidenceSize)
	}
	if len(data) > EvidenceSize {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(data)-EvidenceSize)
	}
	if string(data[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: bad magic %q", ErrMalformed, data[:len(magic)])
	}
	if v := data[len(magic)]; v != Version {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrMalformed, v)
	}
	flags := data[len(magic)+1]
	if flags&^flagDebug != 0 {
		return nil, fmt.Errorf("%w: reserved flags 0x%02x set", ErrMalformed, flags&^flagDebug)
	}
	rest := data[headerSize:]
	e := &Evidence{PlatformKey: bytes.Clone(rest[:ed25519.PublicKeySize])}
	rest = rest[ed25519.PublicKeySize:]
	rest = rest[copy(e.Measurement[:], rest):]
	rest = rest[copy(e.ReportData[:], rest):]
	e.Debug = flags&flagDebug != 0
	if !ed25519.Verify(e.PlatformKey, signedMessage(data[:bodySize]), rest) {
		return nil, ErrBadSignature
	}
	return e, nil
}

// VerifierOptions configure a [Verifier].
type VerifierOptions struct {
	// AllowSimulated must be set for the verifier to accept any evidence.
	// Setting it says: "I know this evidence proves nothing."
	AllowSimulated bool
	// PlatformKeys, when not empty, lists the only platform public keys
	// whose evidence is accepted.
	PlatformKeys []ed25519.PublicKey
}

// Verifier checks sim evidence. It implements [attest.Verifier] for
// [attest.Sim]. The zero Verifier refuses all evidence; use [NewVerifier].
type Verifier struct {
	allow  bool
	pinned []ed25519.PublicKey
}

var _ attest.Verifier = (*Verifier)(nil)

// NewVerifier returns a verifier configured by opts.
func NewVerifier(opts VerifierOptions) *Verifier {
	pinned := make([]ed25519.PublicKey, len(opts.PlatformKeys))
	for i, k := range opts.PlatformKeys {
		pinned[i] = bytes.Clone(k)
	}
	return &Verifier{allow: opts.AllowSimulated, pinned: pinned}
}

// TEE returns [attest.Sim].
func (v *Verifier) TEE() attest.TEE { return attest.Sim }

// Verify checks ev and returns the identity it claims: TEE sim, the
// measurement, the debug flag and the report data, with no signer and no
// TCB status. It refuses with an error wrapping [attest.ErrSimulated] unless
// the verifier was built with AllowSimulated.
func (v *Verifier) Verify(ctx context.Context, ev attest.Evidence) (attest.Identity, error) {
	if v == nil || !v.allow {
		return attest.Identity{}, fmt.Errorf("sim: verifier not built with AllowSimulated: %w", attest.ErrSimulated)
	}
	if ev.TEE != attest.Sim {
		return attest.Identity{}, fmt.Errorf("sim: cannot verify %q evidence", ev.TEE)
	}
	if len(ev.Collateral) != 0 {
		return attest.Identity{}, fmt.Errorf("%w: sim evidence has no collateral, got %d bytes", ErrMalformed, len(ev.Collateral))
	}
	e, err := Parse(ev.Data)
	if err != nil {
		return attest.Identity{}, err
	}
	if len(v.pinned) > 0 && !v.isPinned(e.PlatformKey) {
		return attest.Identity{}, fmt.Errorf("%w: %s", ErrUnknownPlatform, hex.EncodeToString(e.PlatformKey))
	}
	return attest.Identity{
		TEE:         attest.Sim,
		Measurement: bytes.Clone(e.Measurement[:]),
		Debug:       e.Debug,
		ReportData:  e.ReportData,
	}, nil
}

func (v *Verifier) isPinned(k ed25519.PublicKey) bool {
	for _, p := range v.pinned {
		if p.Equal(k) {
			return true
		}
	}
	return false
}
