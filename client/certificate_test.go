package client_test

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/localbackend"
)

// The client takes the certificate key from the bundle it verified: the
// enclave's.
func TestCertificateKeyAttested(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	c := newClient(t, b.URL, b, nil, nil)
	want := b.Service.Enclave.CertificateKey()
	if got := c.CertificateKey(); len(got) != ed25519.PublicKeySize || !got.Equal(want) {
		t.Errorf("attested certificate key %x, the enclave's %x", got, want)
	}
}

// A proxy that swaps the bundle's certificate key for its own, to pass off
// certificates it signed as the enclave's, or drops it, makes the bundle
// fail: the evidence binds the key.
func TestNewRefusesSwappedCertificateKey(t *testing.T) {
	t.Parallel()
	b := startBackend(t, localbackend.Config{})
	mallory := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{6}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	for name, tamper := range map[string]func(*attest.Bundle){
		"swapped": func(bd *attest.Bundle) { bd.CertificateKey = mallory },
		"removed": func(bd *attest.Bundle) { bd.CertificateKey = nil },
	} {
		f := newFront(t, b.URL)
		f.setModify(rewriteBundle(tamper))
		w := &wire{}
		_, err := client.New(t.Context(), client.Config{Server: f.URL, Expectations: b.Expectations(), HTTPClient: w.client()})
		if !isMismatch("report_data")(err) {
			t.Errorf("%s certificate key: New: %v, want a report_data mismatch", name, err)
		}
		onlyAttestationFetched(t, w)
	}
}

// Asking for a certificate, and getting one, does not show on the wire:
// an exposed phone's exchange that asks, the same phone's that does not,
// and a stranger's that asks and gets none have one request size and one
// answer size; so have trace checks with and without the request.
func TestCertificateSameOnTheWire(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clk := newClock()
	b := startBackend(t, localbackend.Config{Now: clk.Now})
	w := &wire{}
	c := newClient(t, b.URL, b, w, clk.Now)
	infected, contact, stranger := newDevice(t, b.URL), newDevice(t, b.URL), newDevice(t, b.URL)
	meet(t, infected, contact, clk.Now().Add(-3*time.Hour), 30)
	meet(t, stranger, newDevice(t, b.URL), clk.Now().Add(-3*time.Hour), 30)
	secret := positive(t, c, b.Authority, infected, clk.Now())
	up, err := c.Exchange(ctx, client.Daily{Report: window(infected, c.Policy(), clk.Now()), Secret: secret, Upload: true})
	if err != nil || up.Upload == nil {
		t.Fatalf("upload: %+v, %v", up, err)
	}

	nonce := client.NewCertificateNonce()
	type sent struct {
		name  string
		d     client.Daily
		certs bool
	}
	var sizes []exchange
	for _, s := range []sent{
		{"an exposed phone asking", client.Daily{Report: window(contact, c.Policy(), clk.Now()), CertificateNonce: nonce}, true},
		{"an exposed phone not asking", client.Daily{Report: window(contact, c.Policy(), clk.Now())}, false},
		{"a stranger asking", client.Daily{Report: window(stranger, c.Policy(), clk.Now()), CertificateNonce: client.NewCertificateNonce()}, false},
	} {
		resp, err := c.Exchange(ctx, s.d)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if (resp.Certificate != nil) != s.certs {
			t.Fatalf("%s: certificate %x, want one: %v", s.name, resp.Certificate, s.certs)
		}
		if s.certs {
			cert, err := certificate.Parse(resp.Certificate)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.VerifyCertificate(cert, nonce); err != nil {
				t.Errorf("%s: the certificate does not verify: %v", s.name, err)
			}
		}
		sizes = append(sizes, w.last(t))
	}
	for i, e := range sizes[1:] {
		if e.ReqSize != sizes[0].ReqSize || e.RespSize != sizes[0].RespSize {
			t.Errorf("exchange %d: %d bytes sent, %d received; the exposed phone asking: %d and %d", i+1, e.ReqSize, e.RespSize, sizes[0].ReqSize, sizes[0].RespSize)
		}
	}
	if sizes[0].ReqSize <= 0 || sizes[0].RespSize <= 0 {
		t.Fatalf("test set-up: sizes %+v not recorded", sizes[0])
	}

	// Trace checks of a trace near a patient's: asking (and getting a
	// certificate) or not, the same size.
	tr := walk(clk.Now().Add(-2*time.Hour), 30, 46.5, 6.5, 0.00001)
	signed, err := b.Authority.SignTrace(tr, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubmitTrace(ctx, signed); err != nil {
		t.Fatal(err)
	}
	if r, err := c.CheckTrace(ctx, tr); err != nil || !r.Exposed || r.Certificate != nil {
		t.Fatalf("a trace check not asking: %+v, %v; want exposed and no certificate", r, err)
	}
	plain := w.last(t)
	if r, err := c.CheckTraceCertificate(ctx, tr, client.NewCertificateNonce()); err != nil || r.Certificate == nil {
		t.Fatalf("a trace check asking: %+v, %v; want a certificate", r, err)
	}
	if asked := w.last(t); asked.ReqSize != plain.ReqSize || asked.RespSize != plain.RespSize {
		t.Errorf("a trace check asking: %d and %d bytes, one not asking: %d and %d", asked.ReqSize, asked.RespSize, plain.ReqSize, plain.RespSize)
	}
	if _, err := c.CheckTraceCertificate(ctx, tr, make([]byte, api.CertificateNonceSize)); err == nil {
		t.Error("CheckTraceCertificate took a nonce of zeros")
	}
}
