package sgx

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

func TestParseRealQuote(t *testing.T) {
	raw := realQuote(t)
	q, err := ParseQuote(raw)
	if err != nil {
		t.Fatal(err)
	}
	h := q.Header
	if h.Version != 3 || h.AttestationKeyType != 2 || h.TEEType != 0 {
		t.Errorf("header version %d key type %d TEE type %d, want 3, 2, 0", h.Version, h.AttestationKeyType, h.TEEType)
	}
	if got, want := hex.EncodeToString(h.QEVendorID[:]), "939a7233f79c4ca9940a0db3957f0607"; got != want {
		t.Errorf("QE vendor ID %s, want Intel's %s", got, want)
	}
	r := q.Report
	for _, c := range []struct{ name, got, want string }{
		{"MRENCLAVE", hex.EncodeToString(r.MREnclave[:]), "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f"},
		{"MRSIGNER", hex.EncodeToString(r.MRSigner[:]), "9affcfae47b848ec2caf1c49b4b283531e1cc425f93582b36806e52a43d78d1a"},
		{"report data prefix", hex.EncodeToString(r.ReportData[:8]), "026a69ced96c3e02"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
		}
	}
	if r.ISVProdID != 0 || r.ISVSVN != 0 || r.Attributes.Flags != 0x5 || r.Debug() {
		t.Errorf("ISVPRODID %d ISVSVN %d flags %#x debug %v, want 0, 0, 0x5, false", r.ISVProdID, r.ISVSVN, r.Attributes.Flags, r.Debug())
	}
	if q.CertDataType != CertDataPCKChain || !bytes.HasPrefix(q.CertData, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Errorf("certification data type %d starting %q, want a PEM chain", q.CertDataType, q.CertData[:min(len(q.CertData), 30)])
	}
	if len(q.QEAuthData) != 32 {
		t.Errorf("QE auth data is %d bytes, want 32", len(q.QEAuthData))
	}
	if got := q.Marshal(); !bytes.Equal(got, raw) {
		t.Error("Marshal does not give back the parsed bytes")
	}
	fmspc, err := q.FMSPC()
	if err != nil || hex.EncodeToString(fmspc[:]) != "00606a000000" {
		t.Errorf("FMSPC() = %x, %v; want 00606a000000, the FMSPC of the TCB info served for it", fmspc, err)
	}
	q.CertData = []byte("not PEM")
	if _, err := q.FMSPC(); !errors.Is(err, ErrPCKChain) {
		t.Errorf("FMSPC of a quote without certificates: %v, want ErrPCKChain", err)
	}
}

func TestParseQuoteErrors(t *testing.T) {
	raw := realQuote(t)
	q, err := ParseQuote(raw)
	if err != nil {
		t.Fatal(err)
	}
	authLenOff := sigDataOffset + fixedSigData - 2
	certTypeOff := authLenOff + 2 + len(q.QEAuthData)
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(raw)) }
	put16 := func(off int, v uint16) []byte {
		return edit(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[off:], v); return b })
	}
	put32 := func(off int, v uint32) []byte {
		return edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b })
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"header only", raw[:HeaderSize], ErrTruncated},
		{"no signature length", raw[:signedSize+2], ErrTruncated},
		{"version 4", put16(0, 4), ErrVersion},
		{"version 2", put16(0, 2), ErrVersion},
		{"key type ECDSA-P384", put16(2, 3), ErrKeyType},
		{"TEE type TDX", put32(4, 0x81), ErrTEEType},
		{"cut inside certification data", raw[:len(raw)-100], ErrLength},
		{"cut after the signature length", raw[:sigDataOffset], ErrLength},
		{"signature length too large", put32(signedSize, uint32(len(raw))), ErrLength},
		{"signature length 2^32-1", put32(signedSize, 0xffffffff), ErrLength},
		{"signature length too small", put32(signedSize, uint32(len(raw)-sigDataOffset-1)), ErrLength},
		{"trailing byte", append(bytes.Clone(raw), 0), ErrLength},
		{"fixed signature fields truncated", edit(func(b []byte) []byte {
			b = b[:sigDataOffset+100]
			binary.LittleEndian.PutUint32(b[signedSize:], 100)
			return b
		}), ErrTruncated},
		{"QE auth data length too large", put16(authLenOff, 0xffff), ErrLength},
		{"certification data type 3 (encrypted PPID)", put16(certTypeOff, 3), ErrCertDataType},
		{"certification data type 6", put16(certTypeOff, 6), ErrCertDataType},
		{"certification data length too large", put32(certTypeOff+2, uint32(len(q.CertData)+1)), ErrLength},
		{"certification data length too small", put32(certTypeOff+2, uint32(len(q.CertData)-1)), ErrLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseQuote(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseQuote: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReportBodyLayout(t *testing.T) {
	// Each field must land at the offset of the SGX REPORTBODY layout,
	// which the QE identity masks and the signatures depend on.
	r := testReport()
	r.CPUSVN[0] = 0xc1
	r.MiscSelect = 0x04030201
	r.ISVExtProdID[0] = 0xe1
	r.ConfigID[0] = 0xcf
	r.ConfigSVN = 0x0c0b
	r.ISVFamilyID[0] = 0xfa
	b := r.Marshal()
	if len(b) != ReportBodySize {
		t.Fatalf("report body is %d bytes, want %d", len(b), ReportBodySize)
	}
	for _, c := range []struct {
		name string
		off  int
		want []byte
	}{
		{"CPUSVN", 0, []byte{0xc1}},
		{"MISCSELECT", 16, []byte{1, 2, 3, 4}},
		{"ISVEXTPRODID", 32, []byte{0xe1}},
		{"ATTRIBUTES", 48, []byte{5, 0, 0, 0, 0, 0, 0, 0, 3}},
		{"MRENCLAVE", 64, r.MREnclave[:]},
		{"MRSIGNER", 128, r.MRSigner[:]},
		{"CONFIGID", 192, []byte{0xcf}},
		{"ISVPRODID, ISVSVN, CONFIGSVN", 256, []byte{7, 0, 3, 0, 0x0b, 0x0c}},
		{"ISVFAMILYID", 304, []byte{0xfa}},
		{"REPORTDATA", 320, r.ReportData[:]},
	} {
		if got := b[c.off : c.off+len(c.want)]; !bytes.Equal(got, c.want) {
			t.Errorf("%s at %d = %x, want %x", c.name, c.off, got, c.want)
		}
	}
	if back := decodeReportBody(b); back != r {
		t.Error("decodeReportBody(Marshal(r)) != r")
	}
}

func FuzzParseQuote(f *testing.F) {
	raw := realQuote(f)
	f.Add(raw)
	f.Add(raw[:sigDataOffset])
	f.Add(raw[:sigDataOffset+fixedSigData+40])
	p := newTestPKI(f, defaultExt())
	f.Add(p.quote(f, testReport(), testQE(), []byte("not a chain")))
	v := NewVerifier(VerifierOptions{Time: realTime, Collateral: realCollateral(f)})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Whatever the bytes, verification must fail or succeed, not panic.
		v.Verify(context.Background(), attest.Evidence{TEE: attest.SGX, Data: b})
		q, err := ParseQuote(b)
		if err != nil {
			if q != nil {
				t.Fatal("ParseQuote returned a quote and an error")
			}
			return
		}
		if got := q.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("Marshal(ParseQuote(b)) != b\n got %x\nwant %x", got, b)
		}
		q.FMSPC()
	})
}
