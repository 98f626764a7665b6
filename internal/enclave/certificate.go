package enclave

// Exposure certificates (package certificate): on request, an exposed
// phone's answer carries a statement of its exposure, signed with the
// certificate key, which the attestation bundle binds, so that the user
// can show a hospital that the attested code found them exposed.
//
// The key's seed derives from the key-encryption key with HKDF, under a
// label of its own, like the enclave's other keys (deriveKeys): it is the
// same across restarts and on every replica of the same store, and a new
// KEK (a new store) makes a new key, under which the certificates of the
// old one are foreign. The key is derived once, at Open, and kept in
// memory only, like the KEK it comes from; it is never stored.
//
// A certificate carries what the answer already told the phone, at the
// precision the policy's answers have, and the phone's nonce: nothing
// derived from its keys or its report, so two certificates of one phone
// share only what they state. When a phone asks for one and is not
// exposed, the enclave signs one all the same and drops it, so that the
// work of an exchange does not depend on the phone's exposure.

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"math"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/gps"
)

// certificateKeyLabel is the HKDF info of the certificate key's seed.
const certificateKeyLabel = "conftrace enclave exposure certificate key v1"

// deriveCertificateKey derives the certificate signing key from the KEK.
func deriveCertificateKey(kek []byte) (ed25519.PrivateKey, error) {
	seed, err := hkdf.Key(sha256.New, kek, nil, certificateKeyLabel, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("certificate key: %w", err)
	}
	defer clear(seed)
	return ed25519.NewKeyFromSeed(seed), nil
}

// CertificateKey returns the public key that verifies the enclave's
// exposure certificates, for the attestation bundle to bind.
func (e *Enclave) CertificateKey() ed25519.PublicKey {
	return e.certKey.Public().(ed25519.PublicKey)
}

// certifyExchange sets resp.Certificate when flags ask for a certificate
// and the exposure answer says the phone was exposed.
func (e *Enclave) certifyExchange(resp *api.ExchangeResponse, flags byte, nonce []byte) error {
	if flags&api.ExchangeCertificate == 0 {
		return nil
	}
	if len(nonce) != certificate.NonceSize || [certificate.NonceSize]byte(nonce) == [certificate.NonceSize]byte{} {
		return api.Errorf(api.CodeMalformed, "certificate nonce of %d bytes, want %d not all zeros", len(nonce), certificate.NonceSize)
	}
	x := resp.Exposure
	c := certificate.Certificate{Kind: certificate.Bluetooth, Order: max(x.Order, 1), Nonce: [certificate.NonceSize]byte(nonce)}
	if x.Exposed && e.policy.Detailed() {
		for _, d := range x.Days {
			if d.Date == x.LastExposure {
				c.RiskMinutes = min(d.WeightedMinutes/100, certificate.MaxRiskMinutes)
			}
		}
	}
	cert, err := e.issue(c, x.Exposed, x.LastExposure)
	resp.Certificate = cert
	return err
}

// certifyTrace sets resp.Certificate when nonce asks for a certificate (it
// is not empty or zeros) and the trace check found the phone exposed;
// episodes are the check's, which params judged.
func (e *Enclave) certifyTrace(resp *api.TraceCheckResponse, nonce []byte, episodes []gps.Episode, params gps.Params) error {
	switch {
	case len(nonce) == 0:
		return nil
	case len(nonce) != certificate.NonceSize:
		return api.Errorf(api.CodeMalformed, "certificate nonce of %d bytes, want %d", len(nonce), certificate.NonceSize)
	case [certificate.NonceSize]byte(nonce) == [certificate.NonceSize]byte{}:
		return nil // zeros: the client's way of not asking
	}
	c := certificate.Certificate{Kind: certificate.GPS, Order: 1, Nonce: [certificate.NonceSize]byte(nonce)}
	if last, ok := gps.LastExposure(episodes, params); ok && e.policy.Detailed() {
		c.RiskMinutes = gpsRiskMinutes(episodes, last)
	}
	cert, err := e.issue(c, resp.Exposed, resp.LastExposure)
	resp.Certificate = cert
	return err
}

// gpsRiskMinutes returns the minutes of the episodes that start in the 24
// hours up to last's start, in whole minutes rounded down: the sum that
// made last an exposure (gps.LastExposure), summed the same way.
func gpsRiskMinutes(episodes []gps.Episode, last gps.Episode) int {
	const day = 24 * 60 * 60
	var secs int64
	for _, ep := range episodes {
		if ep.Start > last.Start-day && ep.Start <= last.Start {
			secs += int64(math.Round(ep.Minutes * 60))
		}
	}
	return int(min(secs/60, certificate.MaxRiskMinutes))
}

// issue completes c (its day, issue and expiry), signs it and returns its
// encoding when exposed, nil otherwise; it signs in both cases, so that
// the exchange's work does not tell. date is the exposed day (DateLayout).
// An exposure dated after the issue hour's day (a fix or sighting within
// the clock skew allowed past midnight) is dated the issue's day.
func (e *Enclave) issue(c certificate.Certificate, exposed bool, date string) ([]byte, error) {
	c.IssuedAt = e.now().UTC().Truncate(time.Hour)
	c.ExpiresAt = c.IssuedAt.Add(e.policy.CertificateValidity())
	issueDay := c.IssuedAt.Truncate(24 * time.Hour)
	c.Date = issueDay
	if exposed {
		d, err := time.Parse(api.DateLayout, date)
		if err != nil {
			return nil, e.internal("exposure certificate", fmt.Errorf("exposed day %q: %w", date, err))
		}
		if d.Before(issueDay) {
			c.Date = d
		}
	}
	signed, err := certificate.Sign(c, e.certKey)
	if err != nil {
		return nil, e.internal("exposure certificate", err)
	}
	if !exposed {
		return nil, nil
	}
	b, err := signed.MarshalBinary()
	if err != nil {
		return nil, e.internal("exposure certificate", err)
	}
	return b, nil
}

// largestCertificate is as long as any certificate an answer carries: the
// encoding has one size.
func largestCertificate() []byte { return make([]byte, certificate.Size) }
