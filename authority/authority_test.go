package authority

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
)

func TestKeyPEMRoundTripAndSignature(t *testing.T) {
	k, err := GenerateKey("lab-1")
	if err != nil {
		t.Fatal(err)
	}
	privPEM, pubPEM, err := k.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParsePrivateKeyPEM(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	name, pub, err := ParsePublicKeyPEM(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if name != "lab-1" || k2.Name != "lab-1" || !pub.Equal(k.PublicKey()) {
		t.Fatalf("round trip lost the name or key: %q %q", name, k2.Name)
	}
	day := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	r, err := k2.SignResult("abcd efgh jkmn pqrsi", api.Positive, day, time.Time{}, day.Add(30*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if r.TestCode != "ABCD-EFGH-JKMN-PQRS1" || r.TestDate != "2026-11-20" || r.SymptomOnset != "" {
		t.Fatalf("unexpected statement %+v", r)
	}
	if !ed25519.Verify(pub, r.SignedBytes(), r.Signature) {
		t.Fatal("signature does not verify with the published key")
	}
	r.Result = api.Negative
	if ed25519.Verify(pub, r.SignedBytes(), r.Signature) {
		t.Fatal("signature still verifies after the result changed")
	}
}

func TestRefusals(t *testing.T) {
	k, _ := GenerateKey("lab")
	now := time.Now()
	if _, err := k.SignResult("ABCD-EFGH-JKMN-PQRS1", api.Pending, now, time.Time{}, now); err == nil {
		t.Error("signed a pending result")
	}
	if _, err := k.SignResult("ABC", api.Positive, now, time.Time{}, now); err == nil {
		t.Error("signed a malformed code")
	}
	if _, err := ParsePrivateKeyPEM([]byte("not pem")); err == nil {
		t.Error("parsed garbage as a key")
	}
	_, pubPEM, _ := k.MarshalPEM()
	if _, err := ParsePrivateKeyPEM(pubPEM); err == nil {
		t.Error("parsed a public key as a private key")
	}
}
