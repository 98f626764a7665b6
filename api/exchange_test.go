package api_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/api"
)

var (
	testSecret = bytes.Repeat([]byte{0x5a}, api.TestSecretSize)
	testAuth   = bytes.Repeat([]byte{0xa5}, api.AuthorizationSize)
	testNonce  = bytes.Repeat([]byte{0x3c}, api.CertificateNonceSize)
	testReport = []byte{1, 0, 'r', 'e', 'p'}
)

// The header's layout, written out: version 2, flags, then the secret, the
// authorization and the certificate nonce at fixed offsets, the report
// after them.
func TestExchangeLayout(t *testing.T) {
	r := api.ExchangeRequest{Flags: api.ExchangePoll | api.ExchangeUpload | api.ExchangeCertificate,
		Secret: testSecret, Authorization: testAuth, CertificateNonce: testNonce, Report: testReport}
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{2, 7}, testSecret...)
	want = append(want, testAuth...)
	want = append(want, testNonce...)
	want = append(want, testReport...)
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding %x, want %x", b, want)
	}
	// Without the certificate, the nonce's place is zeros: one size.
	r.Flags &^= api.ExchangeCertificate
	r.CertificateNonce = nil
	b2, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b2) != len(b) || !bytes.Equal(b2[2+api.TestSecretSize+api.AuthorizationSize:][:api.CertificateNonceSize], make([]byte, api.CertificateNonceSize)) {
		t.Errorf("an exchange without a certificate: %x, want the same size with a nonce of zeros", b2)
	}
}

func TestExchangeRoundTrip(t *testing.T) {
	for _, r := range []api.ExchangeRequest{
		{Report: testReport},
		{Flags: api.ExchangePoll, Secret: testSecret, Report: testReport},
		{Flags: api.ExchangeUpload, Authorization: testAuth, Report: testReport},
		{Flags: api.ExchangeCertificate, CertificateNonce: testNonce, Report: testReport},
		{Flags: api.ExchangePoll | api.ExchangeUpload | api.ExchangeCertificate, Secret: testSecret, CertificateNonce: testNonce, Report: testReport},
	} {
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		var got api.ExchangeRequest
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if got.Flags != r.Flags || !bytes.Equal(got.Secret, r.Secret) || !bytes.Equal(got.Authorization, r.Authorization) ||
			!bytes.Equal(got.CertificateNonce, r.CertificateNonce) || (got.CertificateNonce == nil) != (r.CertificateNonce == nil) ||
			!bytes.Equal(got.Report, r.Report) {
			t.Errorf("decoded %+v, want %+v", got, r)
		}
	}
}

func TestExchangeRefused(t *testing.T) {
	for name, r := range map[string]api.ExchangeRequest{
		"unknown flag":                      {Flags: 0x08, Report: testReport},
		"a nonce without the flag":          {CertificateNonce: testNonce, Report: testReport},
		"the flag without a nonce":          {Flags: api.ExchangeCertificate, Report: testReport},
		"a nonce of zeros":                  {Flags: api.ExchangeCertificate, CertificateNonce: make([]byte, api.CertificateNonceSize), Report: testReport},
		"a nonce one byte short":            {Flags: api.ExchangeCertificate, CertificateNonce: testNonce[1:], Report: testReport},
		"a secret without the flag":         {Secret: testSecret, Report: testReport},
		"an authorization without the flag": {Authorization: testAuth, Report: testReport},
	} {
		if b, err := r.MarshalBinary(); err == nil {
			t.Errorf("%s: encoded as %x", name, b)
		}
	}
	valid, err := api.ExchangeRequest{Flags: api.ExchangeCertificate, CertificateNonce: testNonce, Report: testReport}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	const nonceAt = 2 + api.TestSecretSize + api.AuthorizationSize
	edit := func(f func([]byte)) []byte { b := bytes.Clone(valid); f(b); return b }
	for name, tc := range map[string]struct {
		body []byte
		want string
	}{
		"version 1, before the nonce": {edit(func(b []byte) { b[0] = 1 }), "version 1, want 2"},
		"a header one byte short":     {valid[:nonceAt+api.CertificateNonceSize-1], "needs 98 bytes"},
		"a nonce the flags do not announce": {edit(func(b []byte) { b[1] = 0 }),
			"certificate nonce its flags do not announce"},
		"a nonce of zeros": {edit(func(b []byte) { clear(b[nonceAt : nonceAt+api.CertificateNonceSize]) }),
			"nonce of zeros"},
		"an unknown flag": {edit(func(b []byte) { b[1] |= 0x08 }), "unknown exchange flags"},
	} {
		var r api.ExchangeRequest
		err := r.UnmarshalBinary(tc.body)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

// FuzzExchangeRequest checks that the decoder of a phone's exchange never
// panics, and that whatever it accepts encodes back to the same bytes and
// obeys the layout's rules.
func FuzzExchangeRequest(f *testing.F) {
	for _, r := range []api.ExchangeRequest{
		{Report: testReport},
		{Flags: api.ExchangePoll | api.ExchangeUpload, Secret: testSecret, Authorization: testAuth, Report: testReport},
		{Flags: api.ExchangeCertificate, CertificateNonce: testNonce, Report: testReport},
	} {
		b, err := r.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var r api.ExchangeRequest
		if r.UnmarshalBinary(body) != nil {
			return
		}
		if (r.Flags&api.ExchangeCertificate != 0) != (r.CertificateNonce != nil) ||
			r.CertificateNonce != nil && (len(r.CertificateNonce) != api.CertificateNonceSize || bytes.Equal(r.CertificateNonce, make([]byte, api.CertificateNonceSize))) {
			t.Fatalf("flags %#x with certificate nonce %x", r.Flags, r.CertificateNonce)
		}
		if (r.Flags&api.ExchangePoll != 0) != (r.Secret != nil) {
			t.Fatalf("flags %#x with secret %x", r.Flags, r.Secret)
		}
		again, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", r, err)
		}
		if !bytes.Equal(again, body) {
			t.Fatalf("decoded %x, encoded back as %x", body, again)
		}
	})
}
