package snp

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-sev-guest/kds"
)

func TestReportTCB(t *testing.T) {
	r, err := realVerifier(t).VerifyReport(context.Background(), realEvidence(t))
	if err != nil {
		t.Fatal(err)
	}
	got := r.TCB()
	// The components, read from the packed TCB_VERSION by the firmware
	// ABI's layout: bootloader in byte 0, TEE in 1, SNP in 6, microcode in 7.
	want := TCB{
		Bootloader: uint8(r.ReportedTCB),
		TEE:        uint8(r.ReportedTCB >> 8),
		SNP:        uint8(r.ReportedTCB >> 48),
		Microcode:  uint8(r.ReportedTCB >> 56),
	}
	if got != want {
		t.Errorf("TCB() = %v, want %v (ReportedTCB %#x)", got, want, r.ReportedTCB)
	}
	if got == (TCB{}) {
		t.Error("the real report's TCB decoded as all zeros")
	}
	// Splitting and recomposing with go-sev-guest gives back the report's
	// value (its reserved bytes are zero).
	v, err := kds.ComposeTCBParts(got.parts())
	if err != nil || uint64(v) != r.ReportedTCB {
		t.Errorf("ComposeTCBParts(%v) = %#x, %v; want %#x", got, v, err, r.ReportedTCB)
	}
	if s := got.String(); !strings.Contains(s, "ucode=") || !strings.HasPrefix(s, "bl=") {
		t.Errorf("String() = %q", s)
	}
}

func TestMinimumTCB(t *testing.T) {
	ev := realEvidence(t)
	r, err := realVerifier(t).VerifyReport(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	real := r.TCB()
	launch := splitTCB(r.LaunchTCB)
	verifier := func(opts VerifierOptions) *Verifier {
		opts.Now = at(realTime)
		return mustVerifier(t, opts)
	}

	// A minimum equal to the real TCB, or below it, passes.
	lower := real
	lower.Microcode--
	for name, opts := range map[string]VerifierOptions{
		"equal":        {MinimumTCB: real},
		"lower":        {MinimumTCB: lower},
		"launch equal": {MinimumLaunchTCB: launch},
		"both equal":   {MinimumTCB: real, MinimumLaunchTCB: launch},
	} {
		if _, err := verifier(opts).Verify(context.Background(), ev); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// One component above the real one fails, naming that component.
	bump := func(f func(*TCB)) TCB {
		m := real
		f(&m)
		return m
	}
	tests := []struct {
		name             string
		opts             VerifierOptions
		which, component string
	}{
		{"bootloader", VerifierOptions{MinimumTCB: bump(func(m *TCB) { m.Bootloader++ })}, "reported TCB", "bl "},
		{"tee", VerifierOptions{MinimumTCB: bump(func(m *TCB) { m.TEE++ })}, "reported TCB", "tee "},
		{"snp", VerifierOptions{MinimumTCB: bump(func(m *TCB) { m.SNP++ })}, "reported TCB", "snp "},
		{"microcode", VerifierOptions{MinimumTCB: bump(func(m *TCB) { m.Microcode++ })}, "reported TCB", "ucode "},
		{"launch snp", VerifierOptions{MinimumLaunchTCB: bump(func(m *TCB) { m.SNP++ })}, "launch TCB", "snp "},
		{"only one component set", VerifierOptions{MinimumTCB: TCB{Microcode: real.Microcode + 1}}, "reported TCB", "ucode "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := verifier(tt.opts).Verify(context.Background(), ev)
			if !errors.Is(err, ErrTCBTooLow) {
				t.Fatalf("Verify: %v, want ErrTCBTooLow", err)
			}
			if errors.Is(err, ErrVerification) {
				t.Errorf("Verify: %v also claims the evidence does not verify", err)
			}
			if !strings.Contains(err.Error(), tt.which) {
				t.Errorf("Verify: %q does not say it is the %s", err, tt.which)
			}
			// Exactly the bumped component is named, as "name got < min".
			_, low, _ := strings.Cut(err.Error(), "(")
			if !strings.HasPrefix(low, tt.component) || strings.Count(low, " < ") != 1 {
				t.Errorf("Verify: %q should name only the %q component", err, tt.component)
			}
		})
	}

	// A bad signature is still ErrVerification, not a TCB failure, even
	// with a minimum set.
	bad := ev
	bad.Data = append([]byte(nil), ev.Data...)
	bad.Data[0x2A0] ^= 1
	if _, err := verifier(VerifierOptions{MinimumTCB: bump(func(m *TCB) { m.SNP++ })}).Verify(context.Background(), bad); !errors.Is(err, ErrVerification) || errors.Is(err, ErrTCBTooLow) {
		t.Errorf("bad signature with a minimum: %v, want ErrVerification only", err)
	}
}
