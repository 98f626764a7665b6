package gramine

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/attest/sgx"
)

// fakeDir lays out a stand-in for Gramine's /dev/attestation: the
// attestation type, the report data file, a quote file binding quoteData,
// and the MRENCLAVE sealing key.
func fakeDir(t *testing.T, typ string, quoteData attest.ReportData, key []byte) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fileAttestationType, []byte(typ))
	write(fileUserReportData, make([]byte, attest.ReportDataSize))
	write(fileQuote, fakeQuote(quoteData))
	write(fileMyTargetInfo, fakeTargetInfo())
	if key != nil {
		write(fileMREnclaveKey, key)
	}
	return dir
}

// fakeTargetInfo is a TARGETINFO whose MRENCLAVE is that of fakeQuote.
func fakeTargetInfo() []byte {
	ti := make([]byte, targetInfoSize)
	ti[0] = 0x42
	return ti
}

// fakeQuote is a well-formed (unsigned) quote binding rd.
func fakeQuote(rd attest.ReportData) []byte {
	q := &sgx.Quote{
		Header:       sgx.Header{Version: sgx.QuoteVersion, AttestationKeyType: sgx.AttestationKeyECDSAP256},
		CertDataType: sgx.CertDataPCKChain,
		CertData:     []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"),
	}
	q.Report.ReportData = rd
	q.Report.MREnclave[0] = 0x42
	return q.Marshal()
}

func reportData(s string) attest.ReportData {
	var rd attest.ReportData
	copy(rd[:], s)
	return rd
}

func TestAttest(t *testing.T) {
	rd := reportData("bundle hash")
	dir := fakeDir(t, "dcap", rd, nil)
	g, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if g.TEE() != attest.SGX {
		t.Fatalf("TEE() = %q", g.TEE())
	}
	q, err := sgx.ParseQuote(fakeQuote(rd))
	if err != nil {
		t.Fatal(err)
	}
	if m := g.Measurement(); !bytes.Equal(m, q.Report.MREnclave[:]) {
		t.Fatalf("Measurement() = %x, want the quote's MRENCLAVE %x", m, q.Report.MREnclave[:])
	}
	ev, err := g.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.TEE != attest.SGX || !bytes.Equal(ev.Data, fakeQuote(rd)) || ev.Collateral != nil {
		t.Fatalf("evidence %+v, want the quote as SGX evidence without collateral", ev)
	}
	written, err := os.ReadFile(filepath.Join(dir, fileUserReportData))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(written, rd[:]) {
		t.Fatalf("user_report_data holds %x, want %x", written, rd[:])
	}
}

func TestAttestErrors(t *testing.T) {
	rd := reportData("bundle hash")
	for _, tc := range []struct {
		name  string
		setup func(dir string) error
		want  error
	}{
		{"quote for other report data", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, fileQuote), fakeQuote(reportData("stale")), 0o644)
		}, ErrStaleQuote},
		{"truncated quote", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, fileQuote), fakeQuote(rd)[:100], 0o644)
		}, sgx.ErrTruncated},
		{"no quote file", func(dir string) error { return os.Remove(filepath.Join(dir, fileQuote)) }, os.ErrNotExist},
		{"no report data file", func(dir string) error { return os.Remove(filepath.Join(dir, fileUserReportData)) }, os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := fakeDir(t, "dcap", rd, nil)
			g, err := New(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := g.Attest(context.Background(), rd); !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
	g, err := New(Options{Dir: fakeDir(t, "dcap", rd, nil)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Attest(ctx, rd); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled context: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "attestation")
	_, err := New(Options{Dir: missing})
	if !errors.Is(err, ErrNotGramine) || !strings.Contains(err.Error(), "not running under Gramine-SGX: "+missing+" not found") {
		t.Fatalf("missing directory: %v", err)
	}
	for _, tc := range []struct {
		name string
		typ  string
		want error
	}{
		{"attestation type none", "none", ErrNotDCAP},
		{"attestation type epid", "epid", ErrNotDCAP},
		{"attestation type empty", "", ErrNotDCAP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(Options{Dir: fakeDir(t, tc.typ, attest.ReportData{}, nil)}); !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
		})
	}
	noTarget := fakeDir(t, "dcap", attest.ReportData{}, nil)
	if err := os.WriteFile(filepath.Join(noTarget, fileMyTargetInfo), make([]byte, 64), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Dir: noTarget}); err == nil {
		t.Fatal("short my_target_info accepted")
	}
	empty := t.TempDir()
	if _, err := New(Options{Dir: empty}); !errors.Is(err, ErrNotGramine) {
		t.Fatalf("directory without attestation_type: %v, want ErrNotGramine", err)
	}
	if _, err := New(Options{Dir: fakeDir(t, "dcap\n", attest.ReportData{}, nil)}); err != nil {
		t.Fatalf("attestation type with a newline: %v", err)
	}
}

func TestDefaultDir(t *testing.T) {
	if _, err := os.Stat(DefaultDir); err == nil {
		t.Skip("running under Gramine")
	}
	if _, err := New(Options{}); !errors.Is(err, ErrNotGramine) || !strings.Contains(err.Error(), DefaultDir) {
		t.Fatalf("%v, want ErrNotGramine naming %s", err, DefaultDir)
	}
}

// hkdfSHA256 is RFC 5869 HKDF with SHA-256, an empty salt and a 32-byte
// output, written out here to pin the derivation independently of the code
// under test: changing it would make sealed state unreadable.
func hkdfSHA256(ikm []byte, info string) []byte {
	mac := func(key []byte, parts ...[]byte) []byte {
		h := hmac.New(sha256.New, key)
		for _, p := range parts {
			h.Write(p)
		}
		return h.Sum(nil)
	}
	prk := mac(make([]byte, sha256.Size), ikm)
	return mac(prk, []byte(info), []byte{1})
}

func TestSealingKey(t *testing.T) {
	ctx := context.Background()
	gramineKey := []byte("0123456789abcdef")
	g, err := New(Options{Dir: fakeDir(t, "dcap", attest.ReportData{}, gramineKey)})
	if err != nil {
		t.Fatal(err)
	}
	k1, err := g.SealingKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := hkdfSHA256(gramineKey, "conftrace tee/gramine sealing key v1 (_sgx_mrenclave)"); !bytes.Equal(k1[:], want) {
		t.Fatalf("sealing key %x, want HKDF-SHA256 %x", k1, want)
	}
	k2, err := g.SealingKey(ctx)
	if err != nil || k1 != k2 {
		t.Fatalf("second call: %x, %v; want the same key", k2, err)
	}
	other, err := New(Options{Dir: fakeDir(t, "dcap", attest.ReportData{}, []byte("0123456789abcdeF"))})
	if err != nil {
		t.Fatal(err)
	}
	if k3, err := other.SealingKey(ctx); err != nil || k3 == k1 {
		t.Fatalf("other enclave key: %x, %v; want a different key", k3, err)
	}
}

func TestSealingKeyErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
	}{
		{"no key file", nil},
		{"15 bytes", make([]byte, 15)},
		{"17 bytes", make([]byte, 17)},
		{"empty", []byte{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := New(Options{Dir: fakeDir(t, "dcap", attest.ReportData{}, tc.key)})
			if err != nil {
				t.Fatal(err)
			}
			if k, err := g.SealingKey(context.Background()); err == nil {
				t.Fatalf("got key %x, want an error", k)
			}
		})
	}
}
