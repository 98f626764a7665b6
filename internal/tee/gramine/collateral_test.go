package gramine

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
)

// realDir is a stand-in for Gramine's attestation directory whose quote is
// the real one of attest/sgx's test data.
func realDir(t *testing.T) (dir string, rd attest.ReportData) {
	t.Helper()
	quote, err := os.ReadFile("../../../attest/sgx/testdata/quote_v3_ecdsa_p256_pck_chain.bin")
	if err != nil {
		t.Fatal(err)
	}
	q, err := sgx.ParseQuote(quote)
	if err != nil {
		t.Fatal(err)
	}
	dir = fakeDir(t, "dcap", q.Report.ReportData, nil)
	if err := os.WriteFile(filepath.Join(dir, fileQuote), quote, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, q.Report.ReportData
}

// sourceFunc adapts a function to sgx.CollateralSource.
type sourceFunc func(ctx context.Context, fmspc [6]byte) (*sgx.Collateral, error)

func (f sourceFunc) Collateral(ctx context.Context, fmspc [6]byte) (*sgx.Collateral, error) {
	return f(ctx, fmspc)
}

// With a collateral source, every quote is served with the collateral
// for its platform, fetched anew, so that clients can judge the TCB.
func TestAttestWithCollateral(t *testing.T) {
	dir, rd := realDir(t)
	var asked [][6]byte
	src := sourceFunc(func(ctx context.Context, fmspc [6]byte) (*sgx.Collateral, error) {
		asked = append(asked, fmspc)
		return sgx.CollateralDir("../../../attest/sgx/testdata").Collateral(ctx, fmspc)
	})
	g, err := New(Options{Dir: dir, Collateral: src})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		ev, err := g.Attest(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		v := sgx.NewVerifier(sgx.VerifierOptions{Time: time.Unix(1671497404, 0), RequireCollateral: true})
		id, err := v.Verify(context.Background(), ev)
		if err != nil {
			t.Fatalf("the evidence Gramine served does not verify with its collateral: %v", err)
		}
		if id.TCBStatus != "SWHardeningNeeded" {
			t.Fatalf("TCB status %q, want the real platform's SWHardeningNeeded", id.TCBStatus)
		}
	}
	if want := [6]byte{0x00, 0x60, 0x6A}; len(asked) != 2 || asked[0] != want || asked[1] != want {
		t.Errorf("collateral asked for %x, want the quote's FMSPC %x once per attestation", asked, want)
	}

	failing := sourceFunc(func(context.Context, [6]byte) (*sgx.Collateral, error) { return nil, errors.New("PCCS down") })
	g, err = New(Options{Dir: dir, Collateral: failing})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Attest(context.Background(), rd); err == nil || !bytes.Contains([]byte(err.Error()), []byte("PCCS down")) {
		t.Fatalf("failing source: %v, want its error", err)
	}
}

// A source that fails after it once gave collateral (a PCCS outage) does
// not stop attestation: the last collateral it gave is served, and the
// operator hears of it.
func TestAttestServesLastGoodCollateral(t *testing.T) {
	dir, rd := realDir(t)
	down := false
	src := sourceFunc(func(ctx context.Context, fmspc [6]byte) (*sgx.Collateral, error) {
		if down {
			return nil, errors.New("PCCS down")
		}
		return sgx.CollateralDir("../../../attest/sgx/testdata").Collateral(ctx, fmspc)
	})
	var logged bytes.Buffer
	g, err := New(Options{Dir: dir, Collateral: src, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	first, err := g.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	down = true
	again, err := g.Attest(context.Background(), rd)
	if err != nil {
		t.Fatalf("the source failed after giving collateral once: %v, want the last collateral served", err)
	}
	if !bytes.Equal(again.Collateral, first.Collateral) {
		t.Error("the evidence after the outage carries other collateral than the last the source gave")
	}
	if !bytes.Contains(logged.Bytes(), []byte("PCCS down")) {
		t.Errorf("log %q does not say the source failed", logged.String())
	}
}
