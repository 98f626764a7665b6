package certificate_test

import (
	"bytes"
	"testing"

	"github.com/conftrace/conftrace/certificate"
	"github.com/conftrace/conftrace/policy"
)

// FuzzParse checks that the binary decoder never panics, that what it
// accepts encodes back to the same bytes (one encoding per certificate),
// and that no certificate it accepts verifies unless the test key signed
// exactly those bytes.
func FuzzParse(f *testing.F) {
	good, err := testCert(f).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:certificate.Size-1])
	f.Add(bytes.Repeat([]byte{0xff}, certificate.Size))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := certificate.Parse(b)
		if err != nil {
			if certificate.Reason(err) != "malformed" {
				t.Fatalf("Parse refused with %v, not ErrMalformed", err)
			}
			return
		}
		again, err := c.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("parsed %x, encoded back as %x (%v)", b, again, err)
		}
		o := opts(policy.Default())
		o.Now = c.IssuedAt
		if c.Verify(o) == nil && !bytes.Equal(b, good) {
			t.Fatalf("a certificate the test key did not sign verifies: %x", b)
		}
	})
}

// FuzzParseText checks the text decoder the same way.
func FuzzParseText(f *testing.F) {
	good, err := testCert(f).MarshalText()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(append(bytes.Clone(good), '\n'))
	f.Add([]byte(certificate.TextPrefix))
	f.Fuzz(func(t *testing.T, s []byte) {
		c, err := certificate.ParseText(s)
		if err != nil {
			if certificate.Reason(err) != "malformed" {
				t.Fatalf("ParseText refused with %v, not ErrMalformed", err)
			}
			return
		}
		again, err := c.MarshalText()
		if err != nil || !bytes.Equal(again, s) {
			t.Fatalf("parsed %q, encoded back as %q (%v)", s, again, err)
		}
	})
}
