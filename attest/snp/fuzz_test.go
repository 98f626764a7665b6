package snp

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/conftrace/conftrace/attest"
	"github.com/google/go-sev-guest/abi"
)

// FuzzCertTable checks that certificate tables from the host never crash the
// parser, and that what parses re-encodes to a table with the same entries.
func FuzzCertTable(f *testing.F) {
	vcek, err := os.ReadFile("testdata/vcek.testcer")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	f.Add(make([]byte, certTableEntrySize))
	f.Add(marshalCertTable([]certEntry{{guid: mustGUID(abi.VcekGUID), data: vcek}}))
	f.Add(marshalCertTable([]certEntry{{guid: mustGUID(abi.ArkGUID), data: []byte("ark")}, {guid: mustGUID(abi.AskGUID), data: nil}}))
	// An entry whose offset plus length wraps around 32 bits.
	wrap := make([]byte, 2*certTableEntrySize+8)
	g := mustGUID(abi.VcekGUID)
	copy(wrap, g[:])
	wrap[16], wrap[17], wrap[18], wrap[19] = 0xf0, 0xff, 0xff, 0xff
	wrap[20] = 0x20
	f.Add(wrap)
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := parseCertTable(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		again, err := parseCertTable(marshalCertTable(entries))
		if err != nil {
			t.Fatalf("re-encoded table does not parse: %v", err)
		}
		if len(again) != len(entries) {
			t.Fatalf("%d entries after round trip, want %d", len(again), len(entries))
		}
		for i := range entries {
			if again[i].guid != entries[i].guid || !bytes.Equal(again[i].data, entries[i].data) {
				t.Fatalf("entry %d changed in round trip", i)
			}
		}
	})
}

// FuzzVerify checks that no evidence, however malformed, makes the verifier
// panic, and that every failure is one of the package's error kinds.
func FuzzVerify(f *testing.F) {
	report, err := os.ReadFile("testdata/attestation.bin")
	if err != nil {
		f.Fatal(err)
	}
	vcek, err := os.ReadFile("testdata/vcek.testcer")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append(bytes.Clone(report), marshalCertTable([]certEntry{{guid: mustGUID(abi.VcekGUID), data: vcek}})...))
	f.Add(bytes.Clone(report))
	f.Add(report[:100])
	v, err := NewVerifier(VerifierOptions{Now: at(realTime)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := v.Verify(context.Background(), attest.Evidence{TEE: attest.SNP, Data: data})
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrMissingCertificate) && !errors.Is(err, ErrVerification) {
			t.Fatalf("unclassified error: %v", err)
		}
	})
}
