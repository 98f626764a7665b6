package enclave

import (
	"bytes"
	"errors"
	"testing"

	"github.com/conftrace/conftrace/internal/seal"
)

// A sealed secret opens after a restart, under its own name only, and not
// at all once changed or under another key-encryption key.
func TestSealedSecrets(t *testing.T) {
	v := newEnv(t)
	secret := bytes.Repeat([]byte("private key "), 8)
	sealed, err := v.e.SealSecret("ohttp_keys/keys", secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, secret[:12]) {
		t.Fatal("the sealed secret holds its plaintext")
	}
	again, err := v.e.SealSecret("ohttp_keys/keys", secret)
	if err != nil || bytes.Equal(again, sealed) {
		t.Fatalf("sealing twice gave the same bytes (%v): nonces must be random", err)
	}

	v.restart()
	got, err := v.e.OpenSecret("ohttp_keys/keys", sealed)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("after a restart: %q, %v", got, err)
	}

	flipped := bytes.Clone(sealed)
	flipped[len(flipped)/2] ^= 1
	other := newEnv(t) // another store, another KEK
	for _, tc := range []struct {
		name   string
		e      *Enclave
		secret string
		sealed []byte
	}{
		{"changed", v.e, "ohttp_keys/keys", flipped},
		{"truncated", v.e, "ohttp_keys/keys", sealed[:secretOverhead-1]},
		{"another version", v.e, "ohttp_keys/keys", append([]byte{secretVersion + 1}, sealed[1:]...)},
		{"under another name", v.e, "ohttp_keys/other", sealed},
		{"under another KEK", other.e, "ohttp_keys/keys", sealed},
	} {
		if _, err := tc.e.OpenSecret(tc.secret, tc.sealed); !errors.Is(err, seal.ErrTampered) {
			t.Errorf("%s: err = %v, want seal.ErrTampered", tc.name, err)
		}
	}
	if _, err := v.e.SealSecret("", secret); err == nil {
		t.Error("a secret without a name was sealed")
	}
}
