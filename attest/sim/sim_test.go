package sim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

// testKey returns a deterministic platform key so that failures reproduce.
func testKey(t testing.TB, n byte) ed25519.PrivateKey {
	t.Helper()
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

func testClaims() Claims {
	var c Claims
	c.Measurement = sha256.Sum256([]byte("conftrace test binary"))
	for i := range c.ReportData {
		c.ReportData[i] = byte(i)
	}
	return c
}

func mustSign(t testing.TB, key ed25519.PrivateKey, c Claims) []byte {
	t.Helper()
	b, err := Sign(key, c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignParseRoundTrip(t *testing.T) {
	key := testKey(t, 1)
	for _, debug := range []bool{false, true} {
		c := testClaims()
		c.Debug = debug
		b := mustSign(t, key, c)
		if len(b) != EvidenceSize {
			t.Fatalf("evidence is %d bytes, want %d", len(b), EvidenceSize)
		}
		e, err := Parse(b)
		if err != nil {
			t.Fatalf("debug=%v: Parse: %v", debug, err)
		}
		if !e.PlatformKey.Equal(key.Public()) {
			t.Errorf("debug=%v: platform key %x, want %x", debug, e.PlatformKey, key.Public())
		}
		if e.Claims != c {
			t.Errorf("debug=%v: claims %+v, want %+v", debug, e.Claims, c)
		}
	}
}

// TestDocumentedFormat rebuilds evidence from the layout in the package
// documentation, so that the documentation and the code cannot drift apart.
func TestDocumentedFormat(t *testing.T) {
	key := testKey(t, 2)
	c := testClaims()
	c.Debug = true
	b := mustSign(t, key, c)

	if string(b[0:4]) != "CTSE" || b[4] != 1 || b[5] != 0x01 {
		t.Errorf("header %x, want %x", b[0:6], append([]byte("CTSE"), 1, 1))
	}
	if !bytes.Equal(b[6:38], key.Public().(ed25519.PublicKey)) {
		t.Errorf("public key at 6..38 is %x", b[6:38])
	}
	if !bytes.Equal(b[38:70], c.Measurement[:]) {
		t.Errorf("measurement at 38..70 is %x", b[38:70])
	}
	if !bytes.Equal(b[70:134], c.ReportData[:]) {
		t.Errorf("report data at 70..134 is %x", b[70:134])
	}
	msg := append([]byte("conftrace attest/sim evidence v1\x00"), b[:134]...)
	if !ed25519.Verify(key.Public().(ed25519.PublicKey), msg, b[134:198]) {
		t.Error("signature at 134..198 does not verify over the documented message")
	}
}

func TestSignBadKey(t *testing.T) {
	for _, key := range []ed25519.PrivateKey{nil, make([]byte, ed25519.SeedSize)} {
		if _, err := Sign(key, testClaims()); err == nil {
			t.Errorf("Sign with a %d-byte key succeeded", len(key))
		}
	}
}

func TestParseErrors(t *testing.T) {
	key := testKey(t, 3)
	good := mustSign(t, key, testClaims())
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	// resign re-signs an edited body, so that only the edit is wrong.
	resign := func(f func(b []byte)) []byte {
		b := bytes.Clone(good[:bodySize])
		f(b)
		return append(b, ed25519.Sign(key, signedMessage(b))...)
	}
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"header only", good[:headerSize], ErrTruncated},
		{"one byte short", good[:EvidenceSize-1], ErrTruncated},
		{"trailing byte", append(bytes.Clone(good), 0), ErrMalformed},
		{"bad magic", resign(func(b []byte) { b[0] = 'X' }), ErrMalformed},
		{"version 0", resign(func(b []byte) { b[4] = 0 }), ErrMalformed},
		{"version 2", resign(func(b []byte) { b[4] = 2 }), ErrMalformed},
		{"reserved flag", resign(func(b []byte) { b[5] |= 0x80 }), ErrMalformed},
		{"debug flag flipped", edit(func(b []byte) []byte { b[5] ^= flagDebug; return b }), ErrBadSignature},
		{"measurement changed", edit(func(b []byte) []byte { b[40] ^= 1; return b }), ErrBadSignature},
		{"report data changed", edit(func(b []byte) []byte { b[100] ^= 1; return b }), ErrBadSignature},
		{"signature changed", edit(func(b []byte) []byte { b[EvidenceSize-1] ^= 1; return b }), ErrBadSignature},
		{"other platform key", edit(func(b []byte) []byte {
			copy(b[headerSize:], testKey(t, 4).Public().(ed25519.PublicKey))
			return b
		}), ErrBadSignature},
		{"invalid public key", edit(func(b []byte) []byte {
			copy(b[headerSize:], bytes.Repeat([]byte{0xff}, ed25519.PublicKeySize))
			return b
		}), ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse(tt.data)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, %v; want error %v", e, err, tt.want)
			}
		})
	}
}

// TestParseEveryBitFlip checks that no single-bit change to evidence goes
// unnoticed.
func TestParseEveryBitFlip(t *testing.T) {
	good := mustSign(t, testKey(t, 5), testClaims())
	for i := range good {
		for bit := range 8 {
			b := bytes.Clone(good)
			b[i] ^= 1 << bit
			if _, err := Parse(b); err == nil {
				t.Fatalf("evidence with byte %d bit %d flipped parsed", i, bit)
			}
		}
	}
}

func simEvidence(t testing.TB, key ed25519.PrivateKey, c Claims) attest.Evidence {
	return attest.Evidence{TEE: attest.Sim, Data: mustSign(t, key, c)}
}

func TestVerifierRefusesByDefault(t *testing.T) {
	ev := simEvidence(t, testKey(t, 6), testClaims())
	for name, v := range map[string]*Verifier{
		"zero":            {},
		"nil":             nil,
		"without allow":   NewVerifier(VerifierOptions{}),
		"pinned no allow": NewVerifier(VerifierOptions{PlatformKeys: []ed25519.PublicKey{testKey(t, 6).Public().(ed25519.PublicKey)}}),
	} {
		if _, err := v.Verify(context.Background(), ev); !errors.Is(err, attest.ErrSimulated) {
			t.Errorf("%s verifier: Verify error %v, want %v", name, err, attest.ErrSimulated)
		}
	}
}

func TestVerifierIdentity(t *testing.T) {
	key := testKey(t, 7)
	for _, debug := range []bool{false, true} {
		c := testClaims()
		c.Debug = debug
		v := NewVerifier(VerifierOptions{AllowSimulated: true})
		if v.TEE() != attest.Sim {
			t.Fatalf("TEE() = %q", v.TEE())
		}
		id, err := v.Verify(context.Background(), simEvidence(t, key, c))
		if err != nil {
			t.Fatal(err)
		}
		if id.TEE != attest.Sim || !bytes.Equal(id.Measurement, c.Measurement[:]) ||
			id.Debug != debug || id.ReportData != c.ReportData ||
			id.Signer != nil || id.TCBStatus != "" || id.ProductID != 0 || id.SVN != 0 {
			t.Errorf("identity %+v does not match claims %+v", id, c)
		}
	}
}

func TestVerifierErrors(t *testing.T) {
	key := testKey(t, 8)
	pub := key.Public().(ed25519.PublicKey)
	good := simEvidence(t, key, testClaims())
	allow := NewVerifier(VerifierOptions{AllowSimulated: true})
	tests := []struct {
		name string
		v    *Verifier
		ev   attest.Evidence
		want error
	}{
		{"other TEE", allow, attest.Evidence{TEE: attest.SGX, Data: good.Data}, nil},
		{"collateral", allow, attest.Evidence{TEE: attest.Sim, Data: good.Data, Collateral: []byte{1}}, ErrMalformed},
		{"truncated", allow, attest.Evidence{TEE: attest.Sim, Data: good.Data[:10]}, ErrTruncated},
		{"bad signature", allow, attest.Evidence{TEE: attest.Sim, Data: append(bytes.Clone(good.Data[:EvidenceSize-1]), good.Data[EvidenceSize-1]^1)}, ErrBadSignature},
		{"unpinned key", NewVerifier(VerifierOptions{AllowSimulated: true, PlatformKeys: []ed25519.PublicKey{testKey(t, 9).Public().(ed25519.PublicKey)}}), good, ErrUnknownPlatform},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.v.Verify(context.Background(), tt.ev)
			if err == nil {
				t.Fatal("Verify succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Verify error %v, want %v", err, tt.want)
			}
		})
	}

	pinned := NewVerifier(VerifierOptions{AllowSimulated: true, PlatformKeys: []ed25519.PublicKey{testKey(t, 9).Public().(ed25519.PublicKey), pub}})
	if _, err := pinned.Verify(context.Background(), good); err != nil {
		t.Errorf("evidence by a pinned key refused: %v", err)
	}
}

// TestVerifierCopiesPinnedKeys checks that changing the caller's slice after
// NewVerifier does not change which keys are accepted.
func TestVerifierCopiesPinnedKeys(t *testing.T) {
	key := testKey(t, 10)
	pub := bytes.Clone(key.Public().(ed25519.PublicKey))
	v := NewVerifier(VerifierOptions{AllowSimulated: true, PlatformKeys: []ed25519.PublicKey{pub}})
	pub[0] ^= 1
	if _, err := v.Verify(context.Background(), simEvidence(t, key, testClaims())); err != nil {
		t.Errorf("pinned key was aliased: %v", err)
	}
}

func TestWithAttestVerify(t *testing.T) {
	ctx := context.Background()
	key := testKey(t, 11)
	c := testClaims()
	ev := simEvidence(t, key, c)
	v := NewVerifier(VerifierOptions{AllowSimulated: true})

	id, err := attest.Verify(ctx, ev, c.ReportData, attest.Expectations{AllowSimulated: true, Measurements: [][]byte{c.Measurement[:]}}, v)
	if err != nil {
		t.Fatalf("attest.Verify: %v", err)
	}
	if !bytes.Equal(id.Measurement, c.Measurement[:]) {
		t.Errorf("measurement %x, want %x", id.Measurement, c.Measurement)
	}

	if _, err := attest.Verify(ctx, ev, c.ReportData, attest.Expectations{}, v); !errors.Is(err, attest.ErrSimulated) {
		t.Errorf("without AllowSimulated: %v, want %v", err, attest.ErrSimulated)
	}

	other := sha256.Sum256([]byte("another binary"))
	_, err = attest.Verify(ctx, ev, c.ReportData, attest.Expectations{AllowSimulated: true, Measurements: [][]byte{other[:]}}, v)
	var me *attest.MismatchError
	if !errors.As(err, &me) || me.Field != "measurement" {
		t.Errorf("wrong measurement: %v, want a measurement mismatch", err)
	}

	c.Debug = true
	_, err = attest.Verify(ctx, simEvidence(t, key, c), c.ReportData, attest.Expectations{AllowSimulated: true}, v)
	if !errors.As(err, &me) || me.Field != "debug" {
		t.Errorf("debug evidence: %v, want a debug mismatch", err)
	}
}

func FuzzParse(f *testing.F) {
	key := testKey(f, 12)
	good := mustSign(f, key, testClaims())
	c := testClaims()
	c.Debug = true
	f.Add(good)
	f.Add(mustSign(f, key, c))
	f.Add(good[:bodySize])
	f.Add([]byte("CTSE\x01\x00"))
	f.Add(append(bytes.Clone(good), 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Parse error %v is none of the documented kinds", err)
			}
			return
		}
		// Parsed evidence re-encodes to exactly the input: there is one
		// encoding of each set of claims.
		re := append(appendBody(nil, e.PlatformKey, e.Claims), data[bodySize:]...)
		if !bytes.Equal(re, data) {
			t.Fatalf("re-encoding %x differs from input %x", re, data)
		}
	})
}

// FuzzSignParse checks that whatever the claims and key, Parse returns what
// Sign encoded.
func FuzzSignParse(f *testing.F) {
	f.Add(make([]byte, ed25519.SeedSize), make([]byte, sha256.Size), make([]byte, attest.ReportDataSize), false)
	f.Add(bytes.Repeat([]byte{0xff}, ed25519.SeedSize), bytes.Repeat([]byte{0xff}, sha256.Size), bytes.Repeat([]byte{0xff}, attest.ReportDataSize), true)
	f.Fuzz(func(t *testing.T, seed, m, rd []byte, debug bool) {
		// Stretch the inputs to the sizes they need.
		s := sha256.Sum256(seed)
		key := ed25519.NewKeyFromSeed(s[:])
		var c Claims
		copy(c.Measurement[:], m)
		copy(c.ReportData[:], rd)
		c.Debug = debug
		b, err := Sign(key, c)
		if err != nil {
			t.Fatal(err)
		}
		e, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Sign(...)): %v", err)
		}
		if e.Claims != c || !e.PlatformKey.Equal(key.Public()) {
			t.Fatalf("round trip: got %+v by %x, want %+v by %x", e.Claims, e.PlatformKey, c, key.Public())
		}
	})
}
