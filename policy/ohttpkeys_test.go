package policy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// ohttp_key_days is attested like every other field: it has a default,
// a range, and one place in the canonical form.
func TestOHTTPKeyDays(t *testing.T) {
	def := Default()
	if def.OHTTPKeyDays != 7 || def.OHTTPKeyLifetime() != 7*24*time.Hour {
		t.Fatalf("default ohttp_key_days %d (%v), want 7 (a week)", def.OHTTPKeyDays, def.OHTTPKeyLifetime())
	}
	doc, err := def.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte(`"upload_authorization_seconds":86400,"ohttp_key_days":7,`)) {
		t.Fatalf("canonical form does not hold ohttp_key_days after upload_authorization_seconds:\n%s", doc)
	}
	for _, days := range []int{1, 30} {
		in := strings.Replace(string(doc), `"ohttp_key_days":7`, fmt.Sprintf(`"ohttp_key_days":%d`, days), 1)
		p, err := Parse([]byte(in))
		if err != nil || p.OHTTPKeyDays != days {
			t.Errorf("ohttp_key_days %d: %d, %v", days, p.OHTTPKeyDays, err)
			continue
		}
		if out, err := p.Canonical(); err != nil || string(out) != in {
			t.Errorf("ohttp_key_days %d: canonical form\n%s\nwant\n%s (%v)", days, out, in, err)
		}
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"zero", strings.Replace(string(doc), `"ohttp_key_days":7`, `"ohttp_key_days":0`, 1), "ohttp_key_days 0 outside 1..30"},
		{"too long", strings.Replace(string(doc), `"ohttp_key_days":7`, `"ohttp_key_days":31`, 1), "ohttp_key_days 31 outside 1..30"},
		{"negative", strings.Replace(string(doc), `"ohttp_key_days":7`, `"ohttp_key_days":-7`, 1), "ohttp_key_days -7 outside 1..30"},
		// A policy written before the field existed must say how often
		// the keys rotate: nothing is assumed on the operator's behalf.
		{"missing", strings.Replace(string(doc), `"ohttp_key_days":7,`, ``, 1), "ohttp_key_days 0 outside 1..30"},
		{"not an integer", strings.Replace(string(doc), `"ohttp_key_days":7`, `"ohttp_key_days":7.5`, 1), "invalid"},
	} {
		if _, err := Parse([]byte(tc.doc)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrInvalid mentioning %q", tc.name, err, tc.want)
		}
	}
}
