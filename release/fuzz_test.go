package release

import (
	"bytes"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

// FuzzParse checks that Parse never panics, and that whatever it accepts is
// in the one encoding (it marshals back to the same bytes) and carries only
// signatures that verify. The seed corpus (testdata/fuzz/FuzzParse) holds
// both signed forms and near misses.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"release-measurements.txt", "release-sgx-signer.txt"} {
		b, err := readTestdata(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// A TDX statement with pinned RTMRs, freshly signed.
	k, err := GenerateKey("seed")
	if err != nil {
		f.Fatal(err)
	}
	tdx, err := Sign(Statement{Sequence: 2, TEE: attest.TDX, Measurements: [][]byte{bytes.Repeat([]byte{7}, 48)},
		RTMRs: [attest.RTMRCount][]byte{1: bytes.Repeat([]byte{1}, 48), 2: bytes.Repeat([]byte{2}, 48)}}, k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tdx)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Marshal(), b) {
			t.Fatalf("Parse accepted a file that does not marshal back to itself:\n%q\n%q", b, r.Marshal())
		}
		if len(r.Signatures) == 0 {
			t.Fatal("Parse accepted a file without signatures")
		}
		if err := r.Statement.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid statement: %v", err)
		}
		gov := &Governance{}
		for i, s := range r.Signatures {
			gov.Members = append(gov.Members, Member{Name: string(rune('a' + i%26)), PublicKey: s.PublicKey})
		}
		if len(gov.Members) <= maxMembers {
			if _, err := gov.Verify(b); err != nil {
				t.Fatalf("a set of the file's own signers does not verify it: %v", err)
			}
		}
	})
}

// FuzzParseGovernance checks that ParseGovernance never panics and accepts
// only files in canonical form.
func FuzzParseGovernance(f *testing.F) {
	b, err := readTestdata("governance.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := ParseGovernance(b)
		if err != nil {
			return
		}
		out, err := g.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("ParseGovernance accepted a file that does not marshal back to itself (%v):\n%q", err, b)
		}
	})
}
