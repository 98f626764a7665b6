package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/gps"
)

// Exposure certificates (package certificate): a phone asks for one in its
// exchange (Daily.CertificateNonce) or in a trace check
// (CheckTraceCertificate); a hospital or health authority verifies one
// with a client of the same backend (VerifyCertificate), which checked
// the attestation bundle that binds the certificate key as a phone does.

// ErrNoCertificateKey is returned (wrapped) by VerifyCertificate when the
// verified bundle carries no certificate key: the backend issues none.
var ErrNoCertificateKey = errors.New("client: the attested bundle carries no certificate key")

// NewCertificateNonce returns a fresh random nonce to ask for a
// certificate with: a new one for every certificate, so that none links
// two of them.
func NewCertificateNonce() []byte {
	n := make([]byte, api.CertificateNonceSize)
	rand.Read(n)
	return n
}

// CertificateKey returns the attested certificate key, nil if the bundle
// carries none.
func (c *Client) CertificateKey() ed25519.PublicKey {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return bytes.Clone(c.verified.CertificateKey)
}

// CheckTraceCertificate is CheckTrace asking for an exposure certificate
// with nonce (api.CertificateNonceSize bytes, not all zeros): the answer
// carries one if the trace came near a patient's.
func (c *Client) CheckTraceCertificate(ctx context.Context, tr gps.Trace, nonce []byte) (api.TraceCheckResponse, error) {
	if len(nonce) != api.CertificateNonceSize || bytes.Equal(nonce, make([]byte, api.CertificateNonceSize)) {
		return api.TraceCheckResponse{}, fmt.Errorf("client: a certificate nonce of %d bytes, want %d not all zeros", len(nonce), api.CertificateNonceSize)
	}
	return c.checkTrace(ctx, tr, nonce)
}

// VerifyCertificate checks cert against the key and the policy of the
// bundle the client verified, at the client's time, and with the verifier's
// nonce when nonce is not nil (certificate.Certificate.Verify). The error
// wraps certificate.ErrTampered, ErrForeign, ErrPolicy and so on, or
// ErrNoCertificateKey. Whether cert was presented before is for the
// caller's record (package certificate/seen), when the policy says
// certificates are single use.
func (c *Client) VerifyCertificate(cert certificate.Certificate, nonce []byte) error {
	key := c.CertificateKey()
	if key == nil {
		return fmt.Errorf("%w (backend at %s)", ErrNoCertificateKey, c.base)
	}
	return cert.Verify(certificate.VerifyOptions{Key: key, Policy: c.Policy(), Now: c.now(), Nonce: nonce})
}
