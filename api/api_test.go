package api

import (
	"bytes"
	"errors"
	"testing"
)

func TestTestCode(t *testing.T) {
	s1 := bytes.Repeat([]byte{1}, TestSecretSize)
	s2 := bytes.Repeat([]byte{2}, TestSecretSize)
	c1 := TestCode(s1)
	if len(c1) != 11 || c1[5] != '-' {
		t.Fatalf("code %q is not two groups of five", c1)
	}
	if c1 != TestCode(s1) || c1 == TestCode(s2) {
		t.Fatal("code must be a function of the secret")
	}
	for _, typed := range []string{c1, c1[:5] + c1[6:], " " + string(bytes.ToLower([]byte(c1))) + " "} {
		got, err := NormalizeTestCode(typed)
		if err != nil || got != c1 {
			t.Errorf("NormalizeTestCode(%q) = %q, %v; want %q", typed, got, err, c1)
		}
	}
	for _, bad := range []string{"", "ABCDE-FGHI", "ABCDE-FGHI1", "ABCDE-FGHIJK"} {
		if _, err := NormalizeTestCode(bad); err == nil {
			t.Errorf("NormalizeTestCode(%q) accepted", bad)
		}
	}
}

func TestSignedBytesCoverEveryField(t *testing.T) {
	base := SignedResult{Authority: "a", TestCode: "c", Result: Positive, TestDate: "d", SymptomOnset: "s", IssuedAt: 1, Nonce: []byte{1}}
	edits := []func(*SignedResult){
		func(r *SignedResult) { r.Authority = "b" },
		func(r *SignedResult) { r.TestCode = "x" },
		func(r *SignedResult) { r.Result = Negative },
		func(r *SignedResult) { r.TestDate = "e" },
		func(r *SignedResult) { r.SymptomOnset = "" },
		func(r *SignedResult) { r.IssuedAt = 2 },
		func(r *SignedResult) { r.Nonce = []byte{2} },
		// Moving bytes between fields must change the encoding too.
		func(r *SignedResult) { r.Authority, r.TestCode = "ac", "" },
	}
	for i, edit := range edits {
		r := base
		edit(&r)
		if bytes.Equal(r.SignedBytes(), base.SignedBytes()) {
			t.Errorf("edit %d does not change the signed bytes", i)
		}
	}
}

func TestErrorIs(t *testing.T) {
	err := error(Errorf(CodeReplayed, "result already submitted"))
	if !errors.Is(err, &Error{Code: CodeReplayed}) || errors.Is(err, &Error{Code: CodeExpired}) {
		t.Fatal("errors.Is must match on the code")
	}
}
