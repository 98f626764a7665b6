package certificate

import (
	"crypto/ed25519"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/conftrace/conftrace/policy"
)

// Why a certificate is refused. Every error of this package wraps one.
var (
	// ErrMalformed: the bytes are not a certificate's encoding.
	ErrMalformed = errors.New("certificate: malformed")
	// ErrForeign: another key than the attested one signed it (another
	// backend's, or this backend's before its storage was replaced).
	ErrForeign = errors.New("certificate: not signed by the attested backend's key")
	// ErrTampered: its key id is the attested key's, but the signature
	// does not verify: it was changed after it was signed.
	ErrTampered = errors.New("certificate: the signature does not verify (tampered)")
	// ErrNonce: the verifier gave the phone a nonce, and the certificate
	// carries another.
	ErrNonce = errors.New("certificate: not issued for the verifier's nonce")
	// ErrPolicy: the attested policy could not have issued it.
	ErrPolicy = errors.New("certificate: not one the attested policy issues")
	// ErrNotYetValid: issued later than the verifier's clock allows.
	ErrNotYetValid = errors.New("certificate: issued in the future")
	// ErrExpired: the verifier's clock is at or past its expiry.
	ErrExpired = errors.New("certificate: expired")
	// ErrReplayed: a verifier that records certificates (single use) saw
	// its nonce before.
	ErrReplayed = errors.New("certificate: already presented (single use)")
)

// reasons names the Err values for machines.
var reasons = []struct {
	err  error
	name string
}{
	{ErrMalformed, "malformed"},
	{ErrForeign, "foreign"},
	{ErrTampered, "tampered"},
	{ErrNonce, "nonce"},
	{ErrPolicy, "policy"},
	{ErrNotYetValid, "not_yet_valid"},
	{ErrExpired, "expired"},
	{ErrReplayed, "replayed"},
}

// Reason returns a stable name for why err refused a certificate:
// "malformed", "foreign", "tampered", "nonce", "policy", "not_yet_valid",
// "expired" or "replayed"; "" when err wraps none of the Err values.
func Reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return ""
}

func malformedf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// MaxClockSkew is how far in the future a certificate's issue hour may lie
// by the verifier's clock: the issue time is rounded down to the hour, so
// only the verifier's clock being slow can put it there.
const MaxClockSkew = 5 * time.Minute

// VerifyOptions are what a certificate is checked against: what the
// backend's verified attestation bundle vouches for, and the verifier's
// clock and challenge.
type VerifyOptions struct {
	// Key is the attested certificate key
	// (attest.VerifiedBundle.CertificateKey).
	Key ed25519.PublicKey
	// Policy is the attested policy.
	Policy policy.Policy
	// Now is the verifier's time.
	Now time.Time
	// Nonce, if not nil, is the nonce the verifier gave the phone to ask
	// the certificate with.
	Nonce []byte
}

// Verify checks c against o, in this order: signed by o.Key (ErrForeign
// if its key id is another key's, ErrTampered if the signature does not
// verify), for o.Nonce if set (ErrNonce), issuable under o.Policy
// (ErrPolicy: an order above the policy's max_order, a risk the policy's
// answers do not state or below its threshold, a validity longer than the
// policy's, an exposure day outside the retention window of the issue
// day), and valid at o.Now (ErrNotYetValid, ErrExpired). Whether it was
// presented before is for the verifier's record (package
// certificate/seen).
func (c Certificate) Verify(o VerifyOptions) error {
	if len(o.Key) != ed25519.PublicKeySize {
		return fmt.Errorf("certificate: the attested certificate key is %d bytes, want %d", len(o.Key), ed25519.PublicKeySize)
	}
	enc, err := c.encode()
	if err != nil {
		return err
	}
	if want := KeyIDOf(o.Key); c.KeyID != want {
		return fmt.Errorf("%w: key id %x, the attested key's is %x", ErrForeign, c.KeyID, want)
	}
	if !ed25519.Verify(o.Key, signedBytes(enc), c.Signature[:]) {
		return ErrTampered
	}
	if o.Nonce != nil && subtle.ConstantTimeCompare(o.Nonce, c.Nonce[:]) != 1 {
		return fmt.Errorf("%w: it carries nonce %x", ErrNonce, c.Nonce)
	}
	if err := c.checkPolicy(o.Policy); err != nil {
		return fmt.Errorf("%w: %v", ErrPolicy, err)
	}
	if c.IssuedAt.After(o.Now.Add(MaxClockSkew)) {
		return fmt.Errorf("%w: issued at %s, and it is %s", ErrNotYetValid, c.IssuedAt.Format(time.RFC3339), o.Now.UTC().Format(time.RFC3339))
	}
	if !o.Now.Before(c.ExpiresAt) {
		return fmt.Errorf("%w: valid until %s, and it is %s", ErrExpired, c.ExpiresAt.Format(time.RFC3339), o.Now.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkPolicy reports what in c the policy p could not have issued.
func (c Certificate) checkPolicy(p policy.Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if c.Order > p.MaxOrder() {
		return fmt.Errorf("order %d, and the policy's max_order is %d", c.Order, p.MaxOrder())
	}
	switch threshold := c.threshold(p); {
	case !p.Detailed() && c.RiskMinutes != 0:
		return fmt.Errorf("a risk of %d minutes, and the policy's answers are %s", c.RiskMinutes, p.Answers)
	case p.Detailed() && c.RiskMinutes < threshold:
		return fmt.Errorf("a risk of %d minutes, below the policy's threshold of %d", c.RiskMinutes, threshold)
	}
	if valid, most := c.ExpiresAt.Sub(c.IssuedAt), p.CertificateValidity(); valid > most {
		return fmt.Errorf("valid for %v, and the policy allows %v", valid, most)
	}
	issueDay := c.IssuedAt.UTC().Truncate(24 * time.Hour)
	if first := p.WindowStart(c.IssuedAt); c.Date.Before(first) {
		return fmt.Errorf("exposure day %s before the %d-day retention window of its issue day %s",
			c.Date.Format(time.DateOnly), p.RetentionDays, issueDay.Format(time.DateOnly))
	}
	return nil
}

// threshold returns the minutes from which the policy counts an exposure
// of c's kind and order.
func (c Certificate) threshold(p policy.Policy) int {
	if c.Kind == GPS {
		return p.GPS.MinimumMinutes
	}
	return p.OrderRisk(c.Order).MinimumWeightedMinutes
}
