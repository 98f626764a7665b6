package sgx

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
)

func realPCK(t testing.TB) *x509.Certificate {
	t.Helper()
	q, err := ParseQuote(realQuote(t))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCertChain(q.CertData)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func TestPCKExtensionReal(t *testing.T) {
	x, err := pckExtensionOf(realPCK(t))
	if err != nil {
		t.Fatal(err)
	}
	want := pckExtension{
		FMSPC:   [6]byte{0x00, 0x60, 0x6a, 0x00, 0x00, 0x00},
		PCEID:   [2]byte{0, 0},
		CompSVN: [16]byte{7, 9, 3, 3, 255, 255, 1},
		PCESVN:  13,
		CPUSVN:  [16]byte{7, 9, 3, 3, 255, 255, 1},
	}
	if *x != want {
		t.Fatalf("SGX extension\n got %+v\nwant %+v", *x, want)
	}
}

func TestPCKExtensionRoundTrip(t *testing.T) {
	x := defaultExt()
	x.CompSVN[15] = 255
	x.PCESVN = 0xffff
	got, err := parsePCKExtension(marshalPCKExtension(&x))
	if err != nil {
		t.Fatal(err)
	}
	if *got != x {
		t.Fatalf("got %+v, want %+v", *got, x)
	}
}

func TestPCKExtensionErrors(t *testing.T) {
	entry := func(id asn1.ObjectIdentifier, v any) extEntry {
		b, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return extEntry{ID: id, Value: asn1.RawValue{FullBytes: b}}
	}
	sub := func(arc int) asn1.ObjectIdentifier { return slices.Concat(oidTCB, asn1.ObjectIdentifier{arc}) }
	// tcb returns TCB entries with entry arc replaced by v (dropped if v is nil).
	tcb := func(arc int, v any) []extEntry {
		var es []extEntry
		for a := 1; a <= arcCPUSVN; a++ {
			var val any = 1
			if a == arcCPUSVN {
				val = make([]byte, 16)
			}
			if a == arc {
				if v == nil {
					continue
				}
				val = v
			}
			es = append(es, entry(sub(a), val))
		}
		return es
	}
	ext := func(entries ...extEntry) []byte {
		b, err := asn1.Marshal(entries)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pceid := entry(oidPCEID, []byte{0, 0})
	fmspc := entry(oidFMSPC, make([]byte, 6))
	good := entry(oidTCB, tcb(0, nil))
	if _, err := parsePCKExtension(ext(good, pceid, fmspc)); err != nil {
		t.Fatalf("well-formed extension: %v", err)
	}
	for _, tc := range []struct {
		name string
		der  []byte
	}{
		{"empty", nil},
		{"not a sequence", []byte{0x04, 0x01, 0x00}},
		{"trailing bytes", append(ext(good, pceid, fmspc), 0)},
		{"no TCB", ext(pceid, fmspc)},
		{"no PCE-ID", ext(good, fmspc)},
		{"no FMSPC", ext(good, pceid)},
		{"two FMSPCs", ext(good, pceid, fmspc, fmspc)},
		{"FMSPC 5 bytes", ext(good, pceid, entry(oidFMSPC, make([]byte, 5)))},
		{"FMSPC an integer", ext(good, pceid, entry(oidFMSPC, 6))},
		{"PCE-ID 3 bytes", ext(good, entry(oidPCEID, make([]byte, 3)), fmspc)},
		{"component missing", ext(entry(oidTCB, tcb(5, nil)), pceid, fmspc)},
		{"component 256", ext(entry(oidTCB, tcb(3, 256)), pceid, fmspc)},
		{"component negative", ext(entry(oidTCB, tcb(16, -1)), pceid, fmspc)},
		{"component a string", ext(entry(oidTCB, tcb(1, "7")), pceid, fmspc)},
		{"PCESVN 65536", ext(entry(oidTCB, tcb(arcPCESVN, 65536)), pceid, fmspc)},
		{"PCESVN missing", ext(entry(oidTCB, tcb(arcPCESVN, nil)), pceid, fmspc)},
		{"CPUSVN 15 bytes", ext(entry(oidTCB, tcb(arcCPUSVN, make([]byte, 15))), pceid, fmspc)},
		{"component twice", ext(entry(oidTCB, append(tcb(0, nil), entry(sub(2), 1))), pceid, fmspc)},
		{"TCB not a sequence", ext(entry(oidTCB, 5), pceid, fmspc)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parsePCKExtension(tc.der); !errors.Is(err, ErrPCKExtension) {
				t.Fatalf("%v, want ErrPCKExtension", err)
			}
		})
	}
	// A certificate without the extension.
	if _, err := pckExtensionOf(intelRoot()); !errors.Is(err, ErrPCKExtension) {
		t.Fatalf("root certificate: %v, want ErrPCKExtension", err)
	}
}

func FuzzParsePCKExtension(f *testing.F) {
	for _, e := range realPCK(f).Extensions {
		if e.Id.Equal(oidSGXExtension) {
			f.Add(e.Value)
		}
	}
	x := defaultExt()
	f.Add(marshalPCKExtension(&x))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		x, err := parsePCKExtension(der)
		if err != nil {
			if !errors.Is(err, ErrPCKExtension) {
				t.Fatalf("error %v does not wrap ErrPCKExtension", err)
			}
			return
		}
		back, err := parsePCKExtension(marshalPCKExtension(x))
		if err != nil || *back != *x {
			t.Fatalf("re-encoded extension: %v, %+v != %+v", err, back, x)
		}
	})
}

func TestParseCertChain(t *testing.T) {
	q, err := ParseQuote(realQuote(t))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCertChain(q.CertData)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range certs {
		names = append(names, c.Subject.CommonName)
	}
	if want := []string{cnPCKLeaf, cnPlatformCA, "Intel SGX Root CA"}; !slices.Equal(names, want) {
		t.Fatalf("chain %q, want %q", names, want)
	}
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"junk after the chain", string(q.CertData) + "junk"},
		{"private key block", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
		{"bad DER", "-----BEGIN CERTIFICATE-----\n" + hex.EncodeToString([]byte("x")) + "\n-----END CERTIFICATE-----\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseCertChain([]byte(tc.in)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
