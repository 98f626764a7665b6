package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/conftrace/conftrace/attest"
)

// seedKey is a key from a fixed seed: Ed25519 signatures are
// deterministic, so files it signs are known answers.
func seedKey(name string, seed byte) *Key {
	return &Key{Name: name, priv: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))}
}

// The files in testdata are the format, byte for byte: a change to how
// statements or governance sets are written breaks every release already
// signed, so it must show here.
func TestKnownAnswers(t *testing.T) {
	ha, aud := seedKey("health-authority", 1), seedKey("auditor", 2)
	gov := &Governance{Members: []Member{ha.Member(), aud.Member()}}
	for _, tc := range []struct {
		file string
		st   Statement
	}{
		{"release-measurements.txt", Statement{
			Sequence: 1, TEE: attest.SNP,
			Measurements: [][]byte{bytes.Repeat([]byte{0x48}, 48), bytes.Repeat([]byte{0x22}, 48)},
			PolicySHA256: sha256.Sum256([]byte("policy")),
			Note:         "conftrace v1.0.0 (example)",
		}},
		{"release-sgx-signer.txt", Statement{
			Sequence: 2, TEE: attest.SGX,
			Signer: bytes.Repeat([]byte{0x51}, 32), ProductID: 1, MinSVN: 3,
			PolicySHA256: sha256.Sum256([]byte("policy")),
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := Sign(tc.st, aud)
			if err != nil {
				t.Fatal(err)
			}
			if f, err = Cosign(f, ha); err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f, want) {
				t.Fatalf("signed file:\n%s\nwant testdata/%s:\n%s", f, tc.file, want)
			}
			if _, err := gov.Verify(want); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
	g, err := gov.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("testdata", "governance.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g, want) {
		t.Fatalf("governance file:\n%s\nwant testdata/governance.txt:\n%s", g, want)
	}
}

func readTestdata(name string) ([]byte, error) { return os.ReadFile(filepath.Join("testdata", name)) }
