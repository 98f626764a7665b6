package tdx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/conftrace/conftrace/attest"
	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// realTime is inside the validity of every certificate of the real quote's
// PCK chain (the PCK certificate is valid until 2029-09-20).
var realTime = time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)

// Offsets into a version 4 TDX quote (Intel TDX DCAP quoting library API,
// quote format): a 48-byte header, then the 584-byte TD report body.
const (
	offBody        = 0x30
	offAttributes  = offBody + 0x78
	offMRTD        = offBody + 0x88
	offRTMR0       = offBody + 0x148
	offReportData  = offBody + 0x208
	offSignedSize  = offBody + 0x248
	offSignature   = offSignedSize + 4
	offQEReport    = offSignature + 0x40 + 0x40 + 6
	offQESignature = offQEReport + 0x180
)

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func realQuote(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/tdx_prod_quote_SPR_E4.dat")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func realVerifier() *Verifier { return NewVerifier(VerifierOptions{Now: at(realTime)}) }

func TestPinnedRootIsIntels(t *testing.T) {
	// SHA-256 of the Intel SGX Root CA certificate, as published with the
	// shared SGX test vectors.
	const want = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
	block, rest := pem.Decode(intelRootPEM)
	if block == nil || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatal("pinned root is not exactly one PEM block")
	}
	if got := sha256.Sum256(block.Bytes); hex.EncodeToString(got[:]) != want {
		t.Errorf("pinned root SHA-256 %x, want %s", got, want)
	}
}

func TestVerifyRealQuote(t *testing.T) {
	raw := realQuote(t)
	ev := attest.Evidence{TEE: attest.TDX, Data: raw}
	q, err := realVerifier().VerifyQuote(context.Background(), ev)
	if err != nil {
		t.Fatalf("VerifyQuote: %v", err)
	}
	// Compare with the quote's bytes at the offsets the format defines.
	if !bytes.Equal(q.MRTD, raw[offMRTD:offMRTD+48]) {
		t.Errorf("MRTD %x, want %x", q.MRTD, raw[offMRTD:offMRTD+48])
	}
	for i := range RTMRCount {
		want := raw[offRTMR0+48*i : offRTMR0+48*(i+1)]
		if !bytes.Equal(q.RTMRs[i], want) {
			t.Errorf("RTMR%d %x, want %x", i, q.RTMRs[i], want)
		}
	}
	if !bytes.Equal(q.ReportData[:], raw[offReportData:offReportData+64]) {
		t.Errorf("report data %x, want %x", q.ReportData, raw[offReportData:offReportData+64])
	}
	if want := binary.LittleEndian.Uint64(raw[offAttributes:]); q.TDAttributes != want {
		t.Errorf("TD attributes %#x, want %#x", q.TDAttributes, want)
	}
	// This production quote is from a TD that is not debuggable.
	if q.Debug() {
		t.Errorf("Debug() = true for attributes %#x", q.TDAttributes)
	}

	id, err := realVerifier().Verify(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if id.TEE != attest.TDX || id.Debug || !bytes.Equal(id.Measurement, q.MRTD) || id.ReportData != q.ReportData ||
		id.Signer != nil || id.SVN != 0 || id.TCBStatus != "" {
		t.Errorf("identity %+v does not match the quote", id)
	}
	if len(id.Measurement) != 48 {
		t.Errorf("measurement is %d bytes, want 48", len(id.Measurement))
	}

	// Through attest.Verify: the default expectations refuse the quote,
	// whose TCB they cannot judge without a minimum; with one they accept.
	exp := attest.Expectations{Measurements: [][]byte{q.MRTD}}
	if _, err := attest.Verify(context.Background(), ev, q.ReportData, exp, realVerifier()); !errors.Is(err, attest.ErrTCBNotJudged) {
		t.Errorf("attest.Verify without a minimum TCB: %v, want ErrTCBNotJudged", err)
	}
	exp.MinTDXTCB = q.TEETCBSVN
	if _, err := attest.Verify(context.Background(), ev, q.ReportData, exp, realVerifier()); err != nil {
		t.Errorf("attest.Verify: %v", err)
	}
	var other attest.ReportData
	if _, err := attest.Verify(context.Background(), ev, other, attest.Expectations{}, realVerifier()); err == nil {
		t.Error("attest.Verify accepted the quote for other report data")
	}
}

func TestVerifyRealQuoteFailures(t *testing.T) {
	raw := realQuote(t)
	flip := func(off int) []byte {
		d := bytes.Clone(raw)
		d[off] ^= 0x01
		return d
	}
	set := func(off int, v ...byte) []byte {
		d := bytes.Clone(raw)
		copy(d[off:], v)
		return d
	}
	parsed, err := abi.QuoteToProto(raw)
	if err != nil {
		t.Fatal(err)
	}
	fake := newFakeIntel(t, parsed.(*pb.QuoteV4))
	tests := []struct {
		name string
		v    *Verifier
		data []byte
		tee  attest.TEE
		coll []byte
		want error
	}{
		{"flipped report data", realVerifier(), flip(offReportData + 3), attest.TDX, nil, ErrVerification},
		{"flipped MRTD", realVerifier(), flip(offMRTD), attest.TDX, nil, ErrVerification},
		{"flipped RTMR", realVerifier(), flip(offRTMR0 + 47), attest.TDX, nil, ErrVerification},
		{"flipped quote signature", realVerifier(), flip(offSignature + 5), attest.TDX, nil, ErrVerification},
		{"flipped QE report", realVerifier(), flip(offQEReport + 0x10), attest.TDX, nil, ErrVerification},
		{"flipped QE report signature", realVerifier(), flip(offQESignature + 1), attest.TDX, nil, ErrVerification},
		{"untrusted root", NewVerifier(VerifierOptions{Now: at(realTime), Roots: fake.rootPEM}), raw, attest.TDX, nil, ErrVerification},
		{"no roots", NewVerifier(VerifierOptions{Now: at(realTime), Roots: []byte{}}), raw, attest.TDX, nil, ErrVerification},
		{"expired", NewVerifier(VerifierOptions{Now: at(time.Date(2053, 7, 1, 0, 0, 0, 0, time.UTC))}), raw, attest.TDX, nil, ErrVerification},
		// Length fields that lie: go-tdx-guest would panic on these.
		{"signed data size too large", realVerifier(), set(offSignedSize, 0xff, 0xff, 0xff, 0xff), attest.TDX, nil, ErrMalformed},
		{"QE auth data size too large", realVerifier(), set(offQESignature+0x40, 0xff, 0xff), attest.TDX, nil, ErrMalformed},
		{"certification data size wrong", realVerifier(), set(offSignature+0x80+2, 0, 0, 0, 0), attest.TDX, nil, ErrMalformed},
		{"version 3", realVerifier(), set(0, 3), attest.TDX, nil, ErrMalformed},
		{"truncated", realVerifier(), raw[:offSignature], attest.TDX, nil, ErrMalformed},
		{"empty", realVerifier(), nil, attest.TDX, nil, ErrMalformed},
		{"wrong TEE", realVerifier(), raw, attest.SGX, nil, ErrMalformed},
		{"collateral", realVerifier(), raw, attest.TDX, []byte("{}"), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.v.Verify(context.Background(), attest.Evidence{TEE: tt.tee, Data: tt.data, Collateral: tt.coll})
			if !errors.Is(err, tt.want) {
				t.Errorf("Verify: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := realVerifier().Verify(ctx, attest.Evidence{TEE: attest.TDX, Data: realQuote(t)}); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with canceled context: %v", err)
	}
}

func TestVerifyFakeIntel(t *testing.T) {
	raw := realQuote(t)
	parsed, err := abi.QuoteToProto(raw)
	if err != nil {
		t.Fatal(err)
	}
	fake := newFakeIntel(t, parsed.(*pb.QuoteV4))
	v := NewVerifier(VerifierOptions{Now: at(realTime), Roots: fake.rootPEM})
	var rd attest.ReportData
	copy(rd[:], "conftrace fake Intel round trip")
	for _, debug := range []bool{false, true} {
		ev := attest.Evidence{TEE: attest.TDX, Data: fake.quote(t, raw, rd, debug)}
		q, err := v.VerifyQuote(context.Background(), ev)
		if err != nil {
			t.Fatalf("debug=%v: %v", debug, err)
		}
		if q.Debug() != debug || q.Identity().Debug != debug {
			t.Errorf("Debug() = %v, identity Debug %v, want %v", q.Debug(), q.Identity().Debug, debug)
		}
		if q.ReportData != rd {
			t.Errorf("report data %x, want %x", q.ReportData, rd)
		}
		_, err = attest.Verify(context.Background(), ev, rd, attest.Expectations{MinTDXTCB: q.TEETCBSVN}, v)
		var mm *attest.MismatchError
		if debug && !(errors.As(err, &mm) && mm.Field == "debug") {
			t.Errorf("attest.Verify of a debug TD: %v, want a debug mismatch", err)
		}
		if !debug && err != nil {
			t.Errorf("attest.Verify refused a non-debug TD: %v", err)
		}
		// Intel's pinned root does not vouch for the fake Intel.
		if _, err := realVerifier().Verify(context.Background(), ev); !errors.Is(err, ErrVerification) {
			t.Errorf("Intel-rooted verifier accepted a fake Intel quote: %v", err)
		}
	}
}

func TestZeroVerifier(t *testing.T) {
	var v Verifier
	_, err := v.Verify(context.Background(), attest.Evidence{TEE: attest.TDX, Data: realQuote(t)})
	if time.Now().Before(time.Date(2029, 9, 1, 0, 0, 0, 0, time.UTC)) && err != nil {
		t.Errorf("zero Verifier refused the real quote: %v", err)
	}
	if v.TEE() != attest.TDX {
		t.Errorf("TEE() = %q", v.TEE())
	}
}
