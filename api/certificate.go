package api

// Exposure certificates (package certificate). A phone asks for one in an
// exchange (ExchangeCertificate, with ExchangeRequest.CertificateNonce) or
// in a trace check (TraceCheckRequest.CertificateNonce); when the phone
// was exposed, the answer carries the certificate, which states the
// exposure, carries the phone's nonce and is signed with the key the
// attestation bundle binds. Asking for one changes neither the request's
// size nor the answer's: the nonce field is in every request (zeros when
// not asking), and every answer is padded to the size of one that carries
// a certificate.

// CertificateNonceSize is the size of the nonce a phone asks for an
// exposure certificate with, certificate.NonceSize.
const CertificateNonceSize = 32
