package authority

import "testing"

// FuzzParsePEM checks that the key parsers never panic on arbitrary input
// and that a parsed private key still signs.
func FuzzParsePEM(f *testing.F) {
	k, _ := GenerateKey("lab")
	priv, pub, _ := k.MarshalPEM()
	f.Add(priv)
	f.Add(pub)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAuthority: x\n\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if k, err := ParsePrivateKeyPEM(b); err == nil && len(k.PublicKey()) != 32 {
			t.Fatal("parsed private key has no Ed25519 public key")
		}
		ParsePublicKeyPEM(b)
	})
}
