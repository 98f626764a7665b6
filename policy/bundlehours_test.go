package policy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// bundle_hours is attested like every other field: it has a default, a
// range, and one place in the canonical form. It replaced ohttp_key_days,
// which a policy may no longer carry.
func TestBundleHours(t *testing.T) {
	def := Default()
	if def.BundleHours != 24 || def.BundleLifetime() != 24*time.Hour {
		t.Fatalf("default bundle_hours %d (%v), want 24", def.BundleHours, def.BundleLifetime())
	}
	doc, err := def.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte(`"upload_authorization_seconds":86400,"bundle_hours":24,`)) {
		t.Fatalf("canonical form does not hold bundle_hours after upload_authorization_seconds:\n%s", doc)
	}
	for _, hours := range []int{6, 168} {
		in := strings.Replace(string(doc), `"bundle_hours":24`, fmt.Sprintf(`"bundle_hours":%d`, hours), 1)
		p, err := Parse([]byte(in))
		if err != nil || p.BundleHours != hours {
			t.Errorf("bundle_hours %d: %d, %v", hours, p.BundleHours, err)
			continue
		}
		if out, err := p.Canonical(); err != nil || string(out) != in {
			t.Errorf("bundle_hours %d: canonical form\n%s\nwant\n%s (%v)", hours, out, in, err)
		}
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"too short", strings.Replace(string(doc), `"bundle_hours":24`, `"bundle_hours":5`, 1), "bundle_hours 5 outside 6..168"},
		{"too long", strings.Replace(string(doc), `"bundle_hours":24`, `"bundle_hours":169`, 1), "bundle_hours 169 outside 6..168"},
		{"negative", strings.Replace(string(doc), `"bundle_hours":24`, `"bundle_hours":-24`, 1), "bundle_hours -24 outside 6..168"},
		// A policy must say how long its evidence lives: nothing is
		// assumed on the operator's behalf.
		{"missing", strings.Replace(string(doc), `"bundle_hours":24,`, ``, 1), "bundle_hours 0 outside 6..168"},
		{"not an integer", strings.Replace(string(doc), `"bundle_hours":24`, `"bundle_hours":24.5`, 1), "invalid"},
		{"the field it replaced", strings.Replace(string(doc), `"bundle_hours":24`, `"ohttp_key_days":7`, 1), "ohttp_key_days"},
	} {
		if _, err := Parse([]byte(tc.doc)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrInvalid mentioning %q", tc.name, err, tc.want)
		}
	}
}
