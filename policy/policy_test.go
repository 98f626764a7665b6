package policy

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
)

func testAuthority(t *testing.T, name string) Authority {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return Authority{Name: name, PublicKey: pub}
}

func TestCanonicalRoundTrip(t *testing.T) {
	p := Default()
	p.Authorities = []Authority{testAuthority(t, "lab-1"), testAuthority(t, "hospital-2")}
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	doc2, err := q.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(doc, doc2) {
		t.Fatalf("canonical form not stable:\n%s\n%s", doc, doc2)
	}
	if a, ok := q.Authority("hospital-2"); !ok || !bytes.Equal(a.PublicKey, p.Authorities[1].PublicKey) {
		t.Fatal("authority lost in round trip")
	}
	// Whitespace in the input does not change the canonical form.
	pretty := strings.ReplaceAll(string(doc), ",", ",\n  ")
	r, err := Parse([]byte(pretty))
	if err != nil {
		t.Fatal(err)
	}
	if doc3, _ := r.Canonical(); !bytes.Equal(doc, doc3) {
		t.Fatal("whitespace changed the canonical form")
	}
}

func TestParseRefuses(t *testing.T) {
	good, err := Default().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(old, new string) []byte { return []byte(strings.Replace(string(good), old, new, 1)) }
	dup := Default()
	a := testAuthority(t, "lab")
	dup.Authorities = []Authority{a, a}
	tests := []struct {
		name, want string
		doc        []byte
	}{
		{"unknown field", "unknown field", edit(`"version":1`, `"version":1,"admin":true`)},
		{"wrong version", "version 2", edit(`"version":1`, `"version":2`)},
		{"retention zero", "retention_days 0", edit(`"retention_days":14`, `"retention_days":0`)},
		{"thresholds descend", "ascend", edit(`[55,63,73]`, `[63,55,73]`)},
		{"weights count", "weights", edit(`[100,100,50,0]`, `[100,50,0]`)},
		{"trailing data", "trailing", append(append([]byte{}, good...), []byte(` {}`)...)},
		{"not json", "invalid", []byte(`version: 1`)},
		{"short key", "public key is 3 bytes", edit(`"authorities":[]`, `"authorities":[{"name":"x","public_key":"AAAA"}]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.doc)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
	if _, err := dup.Canonical(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate authority: err = %v", err)
	}
}

func TestRiskScoring(t *testing.T) {
	r := Default().Risk
	tests := []struct {
		minutes, att, want int
	}{
		{10, 40, 1000}, // immediate: full weight
		{10, 55, 1000}, // threshold is inclusive
		{10, 60, 1000}, // near
		{10, 70, 500},  // medium: half
		{10, 90, 0},    // far: nothing
	}
	for _, tt := range tests {
		if got := r.WeightedMinutes(tt.minutes, tt.att); got != tt.want {
			t.Errorf("WeightedMinutes(%d, %d) = %d, want %d", tt.minutes, tt.att, got, tt.want)
		}
	}
	if r.Exposed(1499) || !r.Exposed(1500) {
		t.Error("15 weighted minutes is the default exposure threshold")
	}
}

// TestStoreFlushShape: flushes of one size omit store_flush_max_rows and
// store_flush_hold, and the canonical form then has neither; flushes that
// grow give a maximum of store_flush_rows times a power of two and a hold
// of at least one flush. Anything else is refused, so that each shape has
// one canonical form.
func TestStoreFlushShape(t *testing.T) {
	fixed := Default()
	fixed.StoreFlushMaxRows, fixed.StoreFlushHold = 0, 0
	doc, err := fixed.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(doc), "store_flush_max_rows") || strings.Contains(string(doc), "store_flush_hold") {
		t.Errorf("a policy of one flush size is written with the growth fields: %s", doc)
	}
	for _, tc := range []struct {
		seconds, rows, most, hold int
		want                      string // "" when valid
	}{
		{3600, 32, 0, 0, ""},
		{1, 1, 2, 1, ""},
		{10, 32, 32 << 11, 360, ""},
		{10, 3, 3 << 15, 100_000, ""},
		{0, 32, 0, 0, "store_flush_seconds 0"},
		{86401, 32, 0, 0, "store_flush_seconds 86401"},
		{10, 0, 0, 0, "store_flush_rows 0"},
		{10, 100_001, 0, 0, "store_flush_rows 100001"},
		{10, 32, 0, 1, "store_flush_hold 1 without store_flush_max_rows"},
		{10, 32, 32, 1, "store_flush_max_rows 32"},
		{10, 32, 48, 1, "store_flush_max_rows 48"},
		{10, 32, 16, 1, "store_flush_max_rows 16"},
		{10, 32, -64, 1, "store_flush_max_rows -64"},
		{10, 32, 32 << 12, 1, "store_flush_max_rows 131072"},
		{10, 32, 64, 0, "store_flush_hold 0"},
		{10, 32, 64, 100_001, "store_flush_hold 100001"},
	} {
		p := Default()
		p.StoreFlushSeconds, p.StoreFlushRows, p.StoreFlushMaxRows, p.StoreFlushHold = tc.seconds, tc.rows, tc.most, tc.hold
		err := p.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v, want it valid", tc, err)
		case tc.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want ErrInvalid mentioning %q", tc, err, tc.want)
		}
	}
}
