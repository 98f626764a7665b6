package release

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// nameHeader carries a member's name in its key file.
const nameHeader = "Governance-Member"

// Key is a governance member's signing key, with the member's name.
type Key struct {
	Name string
	priv ed25519.PrivateKey
}

// GenerateKey makes a new signing key for the member called name.
func GenerateKey(name string) (*Key, error) {
	if err := CheckMemberName(name); err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("release: generating key: %w", err)
	}
	return &Key{Name: name, priv: priv}, nil
}

// PublicKey returns the key a governance file lists.
func (k *Key) PublicKey() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// Member returns k's entry in a governance set.
func (k *Key) Member() Member { return Member{Name: k.Name, PublicKey: k.PublicKey()} }

// MarshalPEM returns the private key as PEM-encoded PKCS #8 (which
// "openssl pkey" reads), with the member's name in a header.
func (k *Key) MarshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, fmt.Errorf("release: encoding key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{nameHeader: k.Name}, Bytes: der}), nil
}

// ParseKey reads a key written by MarshalPEM.
func ParseKey(b []byte) (*Key, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("release: no PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("release: private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("release: private key is %T, want Ed25519", k)
	}
	name := blk.Headers[nameHeader]
	if err := CheckMemberName(name); err != nil {
		return nil, fmt.Errorf("release: the key's %s header: %w", nameHeader, err)
	}
	return &Key{Name: name, priv: priv}, nil
}
