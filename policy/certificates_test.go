package policy

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// A policy that leaves certificates out is written without them, so that
// the policies written before them keep their canonical bytes and hashes.
func TestCertificatesOmitted(t *testing.T) {
	p := Default()
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(doc, []byte("certificates")) {
		t.Errorf("the default policy's canonical form mentions certificates: %s", doc)
	}
	if got := p.CertificateValidity(); got != time.Duration(p.RetentionDays)*24*time.Hour {
		t.Errorf("default certificate validity %v, want the retention window", got)
	}
}

func TestCertificatesRoundTrip(t *testing.T) {
	p := Default()
	p.Certificates = Certificates{SingleUse: true, ValidDays: 3}
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte(`"certificates":{"single_use":true,"valid_days":3}`)) {
		t.Errorf("canonical form %s", doc)
	}
	q, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if q.Certificates != p.Certificates || q.CertificateValidity() != 72*time.Hour {
		t.Errorf("parsed %+v (validity %v), want %+v", q.Certificates, q.CertificateValidity(), p.Certificates)
	}
}

func TestCertificatesRefused(t *testing.T) {
	for _, c := range []Certificates{
		{SingleUse: true},
		{ValidDays: -1},
		{ValidDays: MaxCertificateValidDays + 1},
	} {
		p := Default()
		p.Certificates = c
		if err := p.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", c, err)
		}
	}
}
