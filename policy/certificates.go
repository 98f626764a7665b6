package policy

import "time"

// Exposure certificates (package certificate): a statement, signed in the
// TEE, that a phone was exposed, which its user may show a hospital.

// MaxCertificateValidDays bounds Certificates.ValidDays.
const MaxCertificateValidDays = 366

// Certificates is the policy's rule for exposure certificates. Its zero
// value, which a policy writes by leaving the field out, issues
// certificates valid for RetentionDays days (as long as the backend keeps
// what an exposure is found from) that a verifier may accept more than
// once. A policy that sets it states both fields, ValidDays at least 1.
type Certificates struct {
	// SingleUse asks verifiers to accept each certificate once: they
	// record the nonces of the certificates they accepted and refuse a
	// second presentation (conftrace authority verify-certificate
	// --seen). The backend cannot enforce it: it never learns where a
	// certificate is shown.
	SingleUse bool `json:"single_use"`
	// ValidDays is how many days a certificate is valid from its issue.
	ValidDays int `json:"valid_days"`
}

// validate checks the certificate rule: absent, or a validity of 1 to
// MaxCertificateValidDays days.
func (c Certificates) validate() error {
	if c == (Certificates{}) {
		return nil
	}
	if c.ValidDays < 1 || c.ValidDays > MaxCertificateValidDays {
		return invalidf("certificates: valid_days %d outside 1..%d (leave certificates out for the default, the retention window)", c.ValidDays, MaxCertificateValidDays)
	}
	return nil
}

// CertificateValidity returns how long an exposure certificate is valid
// from its issue: Certificates.ValidDays, or RetentionDays days when the
// policy leaves certificates out.
func (p Policy) CertificateValidity() time.Duration {
	days := p.Certificates.ValidDays
	if days == 0 {
		days = p.RetentionDays
	}
	return time.Duration(days) * 24 * time.Hour
}
