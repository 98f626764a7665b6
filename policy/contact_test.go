package policy

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestOperatorContact(t *testing.T) {
	without, err := Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	// A policy without a contact is written as before, so that the hashes
	// of existing policies (and the release statements naming them) hold.
	if bytes.Contains(without, []byte("operator_contact")) {
		t.Fatalf("a policy without a contact names one: %s", without)
	}
	p := Default()
	p.OperatorContact = "privacy@health.example, +41 58 000 00 00"
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if q.OperatorContact != p.OperatorContact {
		t.Fatalf("contact %q after a round trip, want %q", q.OperatorContact, p.OperatorContact)
	}
	for _, bad := range []string{
		" padded",
		"line\nbreak",
		"right-to-left \u202eoverride",
		"zero\u200bwidth",
		strings.Repeat("x", MaxOperatorContact+1),
		"\xff\xfe",
	} {
		p.OperatorContact = bad
		if err := p.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("contact %q: %v, want ErrInvalid", bad, err)
		}
	}
	p.OperatorContact = strings.Repeat("é", MaxOperatorContact/2)
	if err := p.Validate(); err != nil {
		t.Errorf("a contact of %d bytes: %v", len(p.OperatorContact), err)
	}
}
