package policy

import (
	"bytes"
	"testing"
)

// FuzzParse checks that Parse never panics and that whatever it accepts
// has a stable canonical form that parses back to the same policy.
func FuzzParse(f *testing.F) {
	doc, _ := Default().Canonical()
	f.Add(doc)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1,"authorities":[{"name":"a","public_key":"AAAA"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		c1, err := p.Canonical()
		if err != nil {
			t.Fatalf("accepted policy has no canonical form: %v", err)
		}
		q, err := Parse(c1)
		if err != nil {
			t.Fatalf("canonical form does not parse: %v", err)
		}
		c2, _ := q.Canonical()
		if !bytes.Equal(c1, c2) {
			t.Fatalf("canonical form not stable:\n%s\n%s", c1, c2)
		}
	})
}
