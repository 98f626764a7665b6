package certificate_test

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"log"
	"time"

	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/policy"
)

// A hospital checks a certificate a patient shows against the backend's
// attested certificate key and policy. Here the backend's side (signing,
// which only the enclave does) is played by a key made for the example;
// a real verifier takes the key and the policy from the attestation bundle
// it verified (client.Client.VerifyCertificate does both).
func Example() {
	backend := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	pol := policy.Default()
	issued := time.Date(2026, 3, 10, 14, 0, 0, 0, time.UTC)

	// The hospital gives the patient a nonce; the phone asks the backend
	// for a certificate with it, and the backend signs one.
	challenge := bytes.Repeat([]byte{0x3c}, certificate.NonceSize)
	signed, err := certificate.Sign(certificate.Certificate{
		Kind: certificate.Bluetooth, Order: 1,
		Date:     time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC),
		IssuedAt: issued, ExpiresAt: issued.Add(pol.CertificateValidity()),
		Nonce: [certificate.NonceSize]byte(challenge),
	}, backend)
	if err != nil {
		log.Fatal(err)
	}
	text, _ := signed.MarshalText() // what the patient shows, as a file or a QR code

	// The hospital reads it and verifies it.
	c, err := certificate.ParseText(text)
	if err != nil {
		log.Fatal(err)
	}
	err = c.Verify(certificate.VerifyOptions{
		Key:    backend.Public().(ed25519.PublicKey),
		Policy: pol,
		Now:    issued.Add(2 * time.Hour),
		Nonce:  challenge,
	})
	fmt.Println(c, "verified:", err == nil)

	// A day changed by hand no longer verifies.
	c.Date = c.Date.AddDate(0, 0, 1)
	err = c.Verify(certificate.VerifyOptions{Key: backend.Public().(ed25519.PublicKey), Policy: pol, Now: issued.Add(2 * time.Hour)})
	fmt.Println("changed:", certificate.Reason(err))
	// Output:
	// bluetooth exposure of order 1 on 2026-03-08, issued 2026-03-10T14:00:00Z, expires 2026-03-24T14:00:00Z verified: true
	// changed: tampered
}
