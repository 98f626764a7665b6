package enclave

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/gps"
	"github.com/conftrace/conftrace/policy"
)

// newNonce returns a random certificate nonce.
func newNonce() []byte {
	n := make([]byte, api.CertificateNonceSize)
	rand.Read(n)
	return n
}

// exchangeCert sends an exchange that only checks, asking for a
// certificate with nonce.
func (v *env) exchangeCert(nonce []byte, r contactlog.Report) (api.ExchangeResponse, error) {
	return v.e.Exchange(context.Background(), api.ExchangeRequest{Flags: api.ExchangeCertificate, CertificateNonce: bytes.Clone(nonce), Report: encode(v.t, r)})
}

// certKey returns the enclave's certificate key.
func (v *env) certKey() ed25519.PublicKey {
	v.t.Helper()
	return v.e.CertificateKey()
}

// verifyCert parses and verifies b against the enclave's key and policy,
// at its clock, for nonce.
func (v *env) verifyCert(b []byte, nonce []byte) certificate.Certificate {
	v.t.Helper()
	c, err := certificate.Parse(b)
	if err != nil {
		v.t.Fatalf("the certificate does not parse: %v", err)
	}
	if err := c.Verify(certificate.VerifyOptions{Key: v.certKey(), Policy: v.pol, Now: v.now(), Nonce: nonce}); err != nil {
		v.t.Fatalf("the certificate does not verify: %v", err)
	}
	return c
}

func TestCertificateNonceSize(t *testing.T) {
	if api.CertificateNonceSize != certificate.NonceSize {
		t.Fatalf("api.CertificateNonceSize %d, certificate.NonceSize %d", api.CertificateNonceSize, certificate.NonceSize)
	}
}

// TestCertificateOnlyWhenExposed: an exposed phone that asks gets a
// certificate, with its nonce, of what its answer says; a phone not
// exposed, or one that does not ask, gets none.
func TestCertificateOnlyWhenExposed(t *testing.T) {
	v := newEnv(t)
	inf, contact := v.exposedPair()
	v.mustUpload(inf)
	_, stranger := encounter(v.now().Add(-time.Hour), 10, 50)

	nonce := newNonce()
	got, err := v.exchangeCert(nonce, contact)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Exposure.Exposed || got.Certificate == nil {
		t.Fatalf("an exposed phone asking for a certificate: %+v", got)
	}
	c := v.verifyCert(got.Certificate, nonce)
	issued := v.now().UTC().Truncate(time.Hour)
	if c.Kind != certificate.Bluetooth || c.Order != 1 || c.Date.Format(api.DateLayout) != got.Exposure.LastExposure || c.RiskMinutes != 0 ||
		!c.IssuedAt.Equal(issued) || !c.ExpiresAt.Equal(issued.Add(v.pol.CertificateValidity())) || !bytes.Equal(c.Nonce[:], nonce) {
		t.Errorf("certificate %v (nonce %x), want a Bluetooth exposure of order 1 on %s issued %v with nonce %x",
			c, c.Nonce, got.Exposure.LastExposure, issued, nonce)
	}
	// The exposure answer is the same as without the request.
	if want := v.check(contact); !equalExposure(got.Exposure, want) {
		t.Errorf("exposure answer %+v beside a certificate, %+v without", got.Exposure, want)
	}

	got, err = v.exchangeCert(newNonce(), stranger)
	if err != nil {
		t.Fatal(err)
	}
	if got.Exposure.Exposed || got.Certificate != nil {
		t.Errorf("a phone not exposed asking for a certificate: %+v", got)
	}
	plain, err := v.exchange(0, nil, nil, contact)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Certificate != nil {
		t.Errorf("an exchange that did not ask got a certificate")
	}
}

// TestCertificateUnlinkable: a certificate is a function of what it
// states and of the phone's nonce only. Two certificates of one phone
// share only what they state; another phone exposed the same day, asking
// with the same nonce, gets the very same bytes: nothing in a certificate
// comes from the phone's keys or report.
func TestCertificateUnlinkable(t *testing.T) {
	v := newEnv(t)
	a, b, c := newDevice(), newDevice(), newDevice()
	at := v.now().Add(-2 * time.Hour)
	ab, ba := metAt(a, b, at, 2)
	ac, ca := metAt(a, c, at, 2)
	v.mustUpload(a.report(append(ab, ac...)...))

	n1, n2 := newNonce(), newNonce()
	issue := func(r contactlog.Report, nonce []byte) []byte {
		t.Helper()
		got, err := v.exchangeCert(nonce, r)
		if err != nil || got.Certificate == nil {
			t.Fatalf("exchange: %+v, %v; want a certificate", got, err)
		}
		return got.Certificate
	}
	b1, b2 := issue(b.report(ba...), n1), issue(b.report(ba...), n2)
	c1, err := certificate.Parse(b1)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := certificate.Parse(b2)
	if err != nil {
		t.Fatal(err)
	}
	if c1.Nonce == c2.Nonce || c1.Signature == c2.Signature {
		t.Errorf("two certificates of one phone share their nonce or signature")
	}
	pub1, pub2 := c1, c2
	pub1.Nonce, pub1.Signature, pub2.Nonce, pub2.Signature = [32]byte{}, [64]byte{}, [32]byte{}, [64]byte{}
	if pub1 != pub2 {
		t.Errorf("two certificates of one phone differ in what they state: %v and %v", c1, c2)
	}
	if other := issue(c.report(ca...), n1); !bytes.Equal(other, b1) {
		t.Errorf("another phone, same exposure, same nonce: %x, want the same certificate %x", other, b1)
	}
}

// TestCertificateKeyStable: the certificate key is the same after a
// restart and on a replica that obtained the store's key-encryption key
// from a peer, so certificates issued before verify after; another store
// has another key, and its certificates are foreign.
func TestCertificateKeyStable(t *testing.T) {
	v := newEnv(t)
	inf, contact := v.exposedPair()
	v.mustUpload(inf)
	v.flushAll()
	nonce := newNonce()
	got, err := v.exchangeCert(nonce, contact)
	if err != nil || got.Certificate == nil {
		t.Fatalf("exchange: %+v, %v", got, err)
	}
	key := v.certKey()
	if again := v.certKey(); !again.Equal(key) {
		t.Fatal("two calls gave two certificate keys")
	}

	v.restart()
	if k := v.certKey(); !k.Equal(key) {
		t.Errorf("after a restart the certificate key is %x, before %x", k, key)
	}
	v.verifyCert(got.Certificate, nonce)

	replica := v.config()
	rand.Read(replica.SealingKey[:])
	replica.KEK = releasedKEK(t, v.e)
	r, err := Open(context.Background(), replica)
	if err != nil {
		t.Fatal(err)
	}
	if k := r.CertificateKey(); !k.Equal(key) {
		t.Errorf("a replica's certificate key is %x, the store's %x", k, key)
	}

	w := newEnv(t)
	if w.certKey().Equal(key) {
		t.Fatal("two stores have one certificate key")
	}
	c, err := certificate.Parse(got.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Verify(certificate.VerifyOptions{Key: w.certKey(), Policy: w.pol, Now: w.now()})
	if certificate.Reason(err) != "foreign" {
		t.Errorf("another store's certificate: %v, want foreign", err)
	}
}

// TestCertificateRisk: under detailed answers a certificate states the
// day's weighted minutes; under coarse answers it states none.
func TestCertificateRisk(t *testing.T) {
	for _, answers := range []string{policy.AnswersCoarse, policy.AnswersDetailed} {
		t.Run(answers, func(t *testing.T) {
			v := newEnv(t, func(p *policy.Policy) { p.Answers = answers })
			a, b := newDevice(), newDevice()
			// Three intervals of 10 minutes at 60 dB ("near", 100%):
			// 30 weighted minutes.
			var ab, ba []contactlog.Sighting
			for k := range 3 {
				x, y := meet(a, b, v.now().Add(-3*time.Hour+time.Duration(k)*10*time.Minute), 10, 60)
				ab, ba = append(ab, x), append(ba, y)
			}
			v.mustUpload(a.report(ab...))
			nonce := newNonce()
			got, err := v.exchangeCert(nonce, b.report(ba...))
			if err != nil || got.Certificate == nil {
				t.Fatalf("exchange: %+v, %v", got, err)
			}
			c := v.verifyCert(got.Certificate, nonce)
			want := 0
			if answers == policy.AnswersDetailed {
				want = 30
			}
			if c.RiskMinutes != want {
				t.Errorf("risk %d minutes, want %d", c.RiskMinutes, want)
			}
		})
	}
}

// TestCertificateOrder: a phone exposed at order 2 gets a certificate of
// order 2.
func TestCertificateOrder(t *testing.T) {
	v := newEnv(t, maxOrder(2))
	x := newChain(t, v)
	if _, err := v.upload(x.aFirstAnswer.OrderAuthorization, x.aReport); err != nil {
		t.Fatal(err)
	}
	nonce := newNonce()
	got, err := v.exchangeCert(nonce, x.c.report(x.ca...))
	if err != nil || got.Exposure.Order != 2 || got.Certificate == nil {
		t.Fatalf("c's exchange: %+v, %v; want order 2 with a certificate", got, err)
	}
	if c := v.verifyCert(got.Certificate, nonce); c.Order != 2 || c.Date.Format(api.DateLayout) != got.Exposure.LastExposure {
		t.Errorf("certificate %v, want order 2 on %s", c, got.Exposure.LastExposure)
	}
}

// TestCertificateGPS: a trace check that asks gets a GPS certificate when
// the trace came near a patient's, none otherwise; a nonce of zeros does
// not ask.
func TestCertificateGPS(t *testing.T) {
	for _, answers := range []string{policy.AnswersCoarse, policy.AnswersDetailed} {
		t.Run(answers, func(t *testing.T) {
			v := newEnv(t, func(p *policy.Policy) { p.Answers = answers })
			w := newGPSWorld(v.now())
			for _, p := range w.patients {
				v.submitTrace(p)
			}
			check := func(tr gps.Trace, nonce []byte) api.TraceCheckResponse {
				t.Helper()
				r, err := v.e.CheckTrace(context.Background(), api.TraceCheckRequest{Trace: mustWire(t, tr), CertificateNonce: bytes.Clone(nonce)})
				if err != nil {
					t.Fatalf("CheckTrace: %v", err)
				}
				return r
			}
			near := w.phones["4 m north, alongside for 30 minutes"]
			nonce := newNonce()
			got := check(near, nonce)
			if !got.Exposed || got.Certificate == nil {
				t.Fatalf("an exposed trace asking for a certificate: %+v", got)
			}
			c := v.verifyCert(got.Certificate, nonce)
			if c.Kind != certificate.GPS || c.Order != 1 || c.Date.Format(api.DateLayout) != got.LastExposure {
				t.Errorf("certificate %v, want a GPS exposure of order 1 on %s", c, got.LastExposure)
			}
			if answers == policy.AnswersDetailed {
				var minutes float64
				for _, ep := range got.Episodes {
					minutes += ep.Minutes
				}
				if c.RiskMinutes < v.pol.GPS.MinimumMinutes || c.RiskMinutes != int(minutes) {
					t.Errorf("risk %d minutes, want the episodes' %v, at least %d", c.RiskMinutes, minutes, v.pol.GPS.MinimumMinutes)
				}
			} else if c.RiskMinutes != 0 {
				t.Errorf("coarse answers, and the certificate states a risk of %d minutes", c.RiskMinutes)
			}
			if got := check(near, make([]byte, api.CertificateNonceSize)); got.Certificate != nil {
				t.Errorf("a nonce of zeros got a certificate")
			}
			if got := check(w.phones["another town"], newNonce()); got.Exposed || got.Certificate != nil {
				t.Errorf("a trace far away asking for a certificate: %+v", got)
			}
			_, err := v.e.CheckTrace(context.Background(), api.TraceCheckRequest{Trace: mustWire(t, near), CertificateNonce: nonce[:31]})
			wantCode(t, "a nonce of 31 bytes", err, api.CodeMalformed)
		})
	}
}

// TestCertificateNonceRefused: a request for a certificate without a
// usable nonce is malformed, and the exchange is refused whole.
func TestCertificateNonceRefused(t *testing.T) {
	v := newEnv(t)
	inf, contact := v.exposedPair()
	v.mustUpload(inf)
	for name, nonce := range map[string][]byte{"none": nil, "zeros": make([]byte, api.CertificateNonceSize), "31 bytes": newNonce()[:31]} {
		_, err := v.exchangeCert(nonce, contact)
		wantCode(t, name, err, api.CodeMalformed)
	}
}

// TestCertificateAnswerBound: answers that carry a certificate, exchange
// or trace check, coarse or detailed, fit the bound every answer is
// padded to, with room for the framing.
func TestCertificateAnswerBound(t *testing.T) {
	for _, answers := range []string{policy.AnswersCoarse, policy.AnswersDetailed} {
		for _, orders := range []int{1, policy.MaxOrderLimit} {
			v := newEnv(t, bothRules, heavyAnswers, maxOrder(orders), func(p *policy.Policy) { p.Answers = answers })
			inf, contact := newDevice(), newDevice()
			var ups, checks []contactlog.Sighting
			for i := range 6 {
				si, sc := meet(inf, contact, v.now().Add(-time.Hour-time.Duration(i)*10*time.Minute), 60, 255)
				ups, checks = append(ups, si), append(checks, sc)
			}
			secret := newSecret()
			v.submit(secret, api.Positive)
			got, err := v.e.Exchange(context.Background(), api.ExchangeRequest{Flags: api.ExchangePoll | api.ExchangeUpload | api.ExchangeCertificate,
				Secret: bytes.Clone(secret), CertificateNonce: newNonce(), Report: encode(t, inf.report(ups...))})
			if err != nil {
				t.Fatal(err)
			}
			all := []any{got}
			for range 2 {
				got, err := v.e.Exchange(context.Background(), api.ExchangeRequest{Flags: api.ExchangePoll | api.ExchangeCertificate,
					Secret: bytes.Clone(secret), CertificateNonce: newNonce(), Report: encode(t, contact.report(checks...))})
				if err != nil {
					t.Fatal(err)
				}
				if got.Certificate == nil {
					t.Fatalf("%s, max_order %d: the contact got no certificate: %+v", answers, orders, got)
				}
				all = append(all, got)
			}
			patient := walk(v.now().Add(-2*time.Hour), 60, 46.5, 6.5, 0.00001)
			v.submitTrace(patient)
			tr, err := v.e.CheckTrace(context.Background(), api.TraceCheckRequest{Trace: mustWire(t, patient), CertificateNonce: newNonce()})
			if err != nil || tr.Certificate == nil {
				t.Fatalf("trace check: %+v, %v; want a certificate", tr, err)
			}
			all = append(all, tr)
			for _, a := range all {
				b, err := json.Marshal(a)
				if err != nil {
					t.Fatal(err)
				}
				if len(b)+64 > v.e.AnswerBound() {
					t.Errorf("%s, max_order %d: an answer with a certificate of %d bytes leaves no room for the framing within the bound %d: %s",
						answers, orders, len(b), v.e.AnswerBound(), b)
				}
				if _, ok := a.(api.TraceCheckResponse); ok && len(b)+64 > v.e.TraceResponseBound() {
					t.Errorf("%s: a trace answer with a certificate of %d bytes exceeds TraceResponseBound %d", answers, len(b), v.e.TraceResponseBound())
				}
			}
		}
	}
}
