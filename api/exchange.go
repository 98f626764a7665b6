package api

import (
	"fmt"
)

// PathExchange takes a phone's daily exchange (see ExchangeRequest).
const PathExchange = "/v1/exchange"

// ExchangeVersion is the version byte that starts an exchange request.
// Version 2 added the certificate nonce; a backend refuses version 1 as
// malformed.
const ExchangeVersion = 2

// exchangeHeaderSize is the version and flags bytes, the test secret, the
// upload authorization and the certificate nonce, present (or zero) in
// every request.
const exchangeHeaderSize = 1 + 1 + TestSecretSize + AuthorizationSize + CertificateNonceSize

// Offsets of the header's fields.
const (
	exchangeSecretAt = 2
	exchangeAuthAt   = exchangeSecretAt + TestSecretSize
	exchangeNonceAt  = exchangeAuthAt + AuthorizationSize
)

// Flags of an exchange request: which parts besides the exposure check it
// carries.
const (
	// ExchangePoll: the request polls the result of the test whose secret
	// it carries.
	ExchangePoll = 1 << iota
	// ExchangeUpload: the request uploads its report with the upload
	// authorization it carries.
	ExchangeUpload
	// ExchangeCertificate: the request asks for an exposure certificate
	// with the nonce it carries (see CertificateNonceSize).
	ExchangeCertificate

	exchangeFlags = ExchangePoll | ExchangeUpload | ExchangeCertificate
)

// ExchangeRequest is a phone's daily exchange with the backend: an
// exposure check with its report (its daily keys and sightings), and, when
// the phone has them, the poll of its test's result, the upload of the
// same report under its upload authorization and the request of an
// exposure certificate. Every phone sends one a day,
// and every request has the same layout whatever it carries, so that on the
// wire a phone that polls a result or uploads (an infected phone) looks
// like any other: only the report's length sets the request's size, and it
// is the same report whether the phone uploads it or only checks it.
//
// Its body is binary, of the report's content type:
//
//	version (1, = 2) || flags (1) || test secret (32) || upload authorization (32)
//	    || certificate nonce (32) || report
//
// where the secret, the authorization and the nonce are zeros when the
// flags do not say they are there. An upload whose authorization is zeros
// is authorized by the result the same exchange polls; a certificate is
// asked with a nonce that is not zeros. Version 1 had no certificate
// nonce; it is refused.
type ExchangeRequest struct {
	// Flags is any of ExchangePoll, ExchangeUpload and
	// ExchangeCertificate, or none.
	Flags byte
	// Secret is the test secret when Flags has ExchangePoll.
	Secret []byte
	// Authorization is the upload authorization when Flags has
	// ExchangeUpload; nil uploads under the result the exchange polls.
	Authorization []byte
	// CertificateNonce is the phone's nonce for the exposure certificate
	// when Flags has ExchangeCertificate.
	CertificateNonce []byte
	// Report is the encoded report (package contactlog).
	Report []byte
}

// MediaType returns the content type of the request body, a report's.
func (ExchangeRequest) MediaType() string { return MediaTypeReport }

// MarshalBinary returns the request body.
func (r ExchangeRequest) MarshalBinary() ([]byte, error) {
	if r.Flags&^exchangeFlags != 0 {
		return nil, fmt.Errorf("api: exchange flags %#x", r.Flags)
	}
	b := make([]byte, exchangeHeaderSize, exchangeHeaderSize+len(r.Report))
	b[0], b[1] = ExchangeVersion, r.Flags
	if err := put(b[exchangeSecretAt:exchangeAuthAt], r.Secret, r.Flags&ExchangePoll != 0, "test secret"); err != nil {
		return nil, err
	}
	if err := put(b[exchangeAuthAt:exchangeNonceAt], r.Authorization, r.Flags&ExchangeUpload != 0, "upload authorization"); err != nil {
		return nil, err
	}
	if r.Flags&ExchangeCertificate != 0 && (len(r.CertificateNonce) != CertificateNonceSize || zero(r.CertificateNonce)) {
		return nil, fmt.Errorf("api: exchange asks for a certificate with a nonce of %d bytes, want %d bytes not all zeros", len(r.CertificateNonce), CertificateNonceSize)
	}
	if err := put(b[exchangeNonceAt:], r.CertificateNonce, r.Flags&ExchangeCertificate != 0, "certificate nonce"); err != nil {
		return nil, err
	}
	return append(b, r.Report...), nil
}

// put copies v into dst when present, and requires it to fill dst; a nil
// v leaves zeros (an upload without authorization).
func put(dst, v []byte, present bool, what string) error {
	switch {
	case !present && len(v) != 0:
		return fmt.Errorf("api: exchange carries a %s its flags do not announce", what)
	case present && v != nil && len(v) != len(dst):
		return fmt.Errorf("api: exchange %s is %d bytes, want %d", what, len(v), len(dst))
	}
	copy(dst, v)
	return nil
}

// UnmarshalBinary decodes a request body; the fields share body's memory.
// It checks the layout only: the version, the flags, that the secret, the
// authorization and the nonce are zeros unless announced, and that an
// announced nonce is not.
func (r *ExchangeRequest) UnmarshalBinary(body []byte) error {
	if len(body) < exchangeHeaderSize {
		return fmt.Errorf("api: an exchange needs %d bytes before its report, got %d", exchangeHeaderSize, len(body))
	}
	if body[0] != ExchangeVersion {
		return fmt.Errorf("api: exchange version %d, want %d", body[0], ExchangeVersion)
	}
	flags := body[1]
	if flags&^exchangeFlags != 0 {
		return fmt.Errorf("api: unknown exchange flags %#x", flags)
	}
	secret := body[exchangeSecretAt:exchangeAuthAt:exchangeAuthAt]
	auth := body[exchangeAuthAt:exchangeNonceAt:exchangeNonceAt]
	nonce := body[exchangeNonceAt:exchangeHeaderSize:exchangeHeaderSize]
	if flags&ExchangePoll == 0 {
		if !zero(secret) {
			return fmt.Errorf("api: exchange carries a test secret its flags do not announce")
		}
		secret = nil
	}
	switch {
	case flags&ExchangeUpload == 0 && !zero(auth):
		return fmt.Errorf("api: exchange carries an upload authorization its flags do not announce")
	case zero(auth):
		// No authorization: an upload is authorized by the polled result.
		auth = nil
	}
	switch {
	case flags&ExchangeCertificate == 0 && !zero(nonce):
		return fmt.Errorf("api: exchange carries a certificate nonce its flags do not announce")
	case flags&ExchangeCertificate == 0:
		nonce = nil
	case zero(nonce):
		return fmt.Errorf("api: exchange asks for a certificate with a nonce of zeros")
	}
	*r = ExchangeRequest{Flags: flags, Secret: secret, Authorization: auth, CertificateNonce: nonce, Report: body[exchangeHeaderSize:]}
	return nil
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ExchangeResponse answers a daily exchange. Every answer, whatever it
// says, is padded to one size.
type ExchangeResponse struct {
	// Exposure answers the exposure check.
	Exposure ExposureResponse `json:"exposure"`
	// Result answers the result poll, when the request polled.
	Result *PollResultResponse `json:"result,omitempty"`
	// Upload answers the upload, when the request uploaded and the upload
	// was accepted.
	Upload *UploadResponse `json:"upload,omitempty"`
	// UploadError says why an upload was refused (the exposure check and
	// the poll were still answered).
	UploadError *Error `json:"upload_error,omitempty"`
	// Certificate is the exposure certificate (package certificate,
	// binary form), when the request asked for one and the phone was
	// exposed; a phone not exposed gets none.
	Certificate []byte `json:"certificate,omitempty"`
}
