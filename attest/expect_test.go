package attest

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// CheckCode judges the code, not the platform: an auditor reading offline
// evidence from a debug or out-of-date platform sees it reported, while a
// wrong measurement or simulated evidence is still refused.
func TestCheckCode(t *testing.T) {
	exp := Expectations{Measurements: [][]byte{{1}}, MinSVN: 2}
	platform := Identity{TEE: SGX, Measurement: []byte{1}, SVN: 2, Debug: true, TCBStatus: "OutOfDate"}
	if err := exp.CheckCode(platform); err != nil {
		t.Errorf("CheckCode refused the right code on a debug, out-of-date platform: %v", err)
	}
	if err := exp.Check(platform); err == nil {
		t.Error("Check accepted a debug platform")
	}
	for _, c := range []struct {
		id    Identity
		field string
	}{
		{Identity{TEE: SGX, Measurement: []byte{9}, SVN: 2}, "measurement"},
		{Identity{TEE: SGX, Measurement: []byte{1}, SVN: 1}, "svn"},
	} {
		var me *MismatchError
		if err := exp.CheckCode(c.id); !errors.As(err, &me) || me.Field != c.field {
			t.Errorf("CheckCode(%+v) = %v, want a %s mismatch", c.id, err, c.field)
		}
	}
	if err := exp.CheckCode(Identity{TEE: Sim, Measurement: []byte{1}, SVN: 2}); !errors.Is(err, ErrSimulated) {
		t.Errorf("CheckCode of simulated evidence = %v, want ErrSimulated", err)
	}
}

func TestParseMeasurement(t *testing.T) {
	for _, ok := range []string{strings.Repeat("ab", 32), strings.Repeat("CD", 48)} {
		if b, err := ParseMeasurement(ok); err != nil || hex.EncodeToString(b) != strings.ToLower(ok) {
			t.Errorf("ParseMeasurement(%q) = %x, %v", ok, b, err)
		}
	}
	for in, want := range map[string]string{
		"":                       "0 bytes",
		strings.Repeat("ab", 31): "31 bytes, want 32 (sim, sgx) or 48 (tdx, snp)",
		strings.Repeat("ab", 40): "40 bytes",
		"xyz":                    "not valid hex",
		strings.Repeat("a", 63):  "not valid hex",
	} {
		if _, err := ParseMeasurement(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMeasurement(%q) = %v, want an error saying %q", in, err, want)
		}
	}
}

func FuzzParseMeasurement(f *testing.F) {
	f.Add(strings.Repeat("ab", 32))
	f.Add(strings.Repeat("AB", 48))
	f.Add("")
	f.Add("0")
	f.Add(strings.Repeat("00", 40))
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseMeasurement(s)
		if err != nil {
			return
		}
		if len(b) != 32 && len(b) != 48 {
			t.Fatalf("ParseMeasurement(%q) accepted %d bytes", s, len(b))
		}
		if hex.EncodeToString(b) != strings.ToLower(s) {
			t.Fatalf("ParseMeasurement(%q) = %x, which does not encode back", s, b)
		}
	})
}
