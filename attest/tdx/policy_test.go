package tdx

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

// Offset of TEE_TCB_SVN in a version 4 quote: the first field of the TD
// report body.
const offTEETCBSVN = offBody

func realQuoteFields(t *testing.T) *Quote {
	t.Helper()
	q, err := realVerifier().VerifyQuote(context.Background(), attest.Evidence{TEE: attest.TDX, Data: realQuote(t)})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func policyVerifier(opts VerifierOptions) *Verifier {
	opts.Now = at(realTime)
	return NewVerifier(opts)
}

func TestMinimumTEETCBSVN(t *testing.T) {
	raw := realQuote(t)
	ev := attest.Evidence{TEE: attest.TDX, Data: raw}
	real := [TEETCBSVNSize]byte(raw[offTEETCBSVN : offTEETCBSVN+TEETCBSVNSize])
	if q := realQuoteFields(t); string(q.TEETCBSVN) != string(real[:]) {
		t.Fatalf("Quote.TEETCBSVN %x, want %x", q.TEETCBSVN, real)
	}

	// A minimum equal to the quote's passes; so does one lower in a byte.
	lower := real
	lower[0]--
	for name, m := range map[string][TEETCBSVNSize]byte{"equal": real, "lower": lower} {
		if _, err := policyVerifier(VerifierOptions{MinimumTEETCBSVN: m}).Verify(context.Background(), ev); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// One byte above the quote's fails with ErrTCBTooLow naming that byte,
	// whatever the other bytes are.
	for _, i := range []int{0, 1, 2, 15} {
		t.Run(fmt.Sprint("byte ", i), func(t *testing.T) {
			m := real
			m[i]++
			_, err := policyVerifier(VerifierOptions{MinimumTEETCBSVN: m}).Verify(context.Background(), ev)
			if !errors.Is(err, ErrTCBTooLow) || errors.Is(err, ErrVerification) || errors.Is(err, ErrMismatch) {
				t.Fatalf("Verify: %v, want ErrTCBTooLow only", err)
			}
			want := fmt.Sprintf("(byte %d is %d < %d)", i, real[i], m[i])
			if !strings.HasSuffix(err.Error(), want) {
				t.Errorf("Verify: %q, want it to end in %q", err, want)
			}
		})
	}
}

func TestExpectedRegisters(t *testing.T) {
	ev := attest.Evidence{TEE: attest.TDX, Data: realQuote(t)}
	q := realQuoteFields(t)
	m48 := func(b []byte) *[MeasurementSize]byte {
		a := [MeasurementSize]byte(b)
		return &a
	}
	flipped := func(b []byte) *[MeasurementSize]byte {
		a := m48(b)
		a[MeasurementSize-1] ^= 1
		return a
	}

	var all [RTMRCount]*[MeasurementSize]byte
	for i := range RTMRCount {
		all[i] = m48(q.RTMRs[i])
	}
	pass := map[string]VerifierOptions{
		"all RTMRs":  {RTMRs: all},
		"MRCONFIGID": {MRConfigID: m48(q.MRConfigID)},
		"MROWNER":    {MROwner: m48(q.MROwner)},
		"everything": {RTMRs: all, MRConfigID: m48(q.MRConfigID), MROwner: m48(q.MROwner), MinimumTEETCBSVN: [TEETCBSVNSize]byte(q.TEETCBSVN)},
	}
	for i := range RTMRCount {
		var one [RTMRCount]*[MeasurementSize]byte
		one[i] = m48(q.RTMRs[i])
		pass[fmt.Sprint("RTMR", i)] = VerifierOptions{RTMRs: one}
	}
	for name, opts := range pass {
		if _, err := policyVerifier(opts).Verify(context.Background(), ev); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	tests := []struct {
		name  string
		opts  VerifierOptions
		field string
	}{
		{"MRCONFIGID", VerifierOptions{MRConfigID: flipped(q.MRConfigID)}, "MR_CONFIG_ID"},
		{"MROWNER", VerifierOptions{MROwner: flipped(q.MROwner)}, "MR_OWNER"},
	}
	for i := range RTMRCount {
		// One register differs; the others are set and match.
		rtmrs := all
		rtmrs[i] = flipped(q.RTMRs[i])
		tests = append(tests, struct {
			name  string
			opts  VerifierOptions
			field string
		}{fmt.Sprint("RTMR", i), VerifierOptions{RTMRs: rtmrs}, fmt.Sprintf("RTMR[%d]", i)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policyVerifier(tt.opts).Verify(context.Background(), ev)
			if !errors.Is(err, ErrMismatch) || errors.Is(err, ErrVerification) || errors.Is(err, ErrTCBTooLow) {
				t.Fatalf("Verify: %v, want ErrMismatch only", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Verify: %q does not name %s", err, tt.field)
			}
		})
	}

	// A TCB failure and a register mismatch are both reported.
	m := [TEETCBSVNSize]byte(q.TEETCBSVN)
	m[0]++
	_, err := policyVerifier(VerifierOptions{MinimumTEETCBSVN: m, MROwner: flipped(q.MROwner)}).Verify(context.Background(), ev)
	if !errors.Is(err, ErrTCBTooLow) || !errors.Is(err, ErrMismatch) {
		t.Errorf("TCB too low and MROWNER mismatch: %v, want both errors", err)
	}
}

// The verifier keeps its own copy of the expected values.
func TestOptionsCopied(t *testing.T) {
	ev := attest.Evidence{TEE: attest.TDX, Data: realQuote(t)}
	q := realQuoteFields(t)
	rtmr := [MeasurementSize]byte(q.RTMRs[0])
	opts := VerifierOptions{RTMRs: [RTMRCount]*[MeasurementSize]byte{&rtmr}}
	v := policyVerifier(opts)
	rtmr[0] ^= 1
	if _, err := v.Verify(context.Background(), ev); err != nil {
		t.Errorf("changing the options after NewVerifier changed the verifier: %v", err)
	}
}
