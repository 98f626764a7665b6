package api

import (
	"bytes"
	"errors"
	"testing"
)

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
