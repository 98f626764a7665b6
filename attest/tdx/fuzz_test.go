package tdx

import (
	"context"
	"errors"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

// FuzzVerify checks that no quote, however malformed, makes the verifier
// (and the go-tdx-guest parser under it) panic, and that every failure is
// one of the package's error kinds.
func FuzzVerify(f *testing.F) {
	raw := realQuote(f)
	f.Add(raw)
	f.Add(raw[:offSignature])
	f.Add(raw[:offQEReport])
	f.Add([]byte{4, 0, 2, 0, 0x81, 0, 0, 0})
	v := NewVerifier(VerifierOptions{Now: at(realTime)})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := v.Verify(context.Background(), attest.Evidence{TEE: attest.TDX, Data: data})
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVerification) {
			t.Fatalf("unclassified error: %v", err)
		}
	})
}
