package ohttp

import (
	"bytes"
	"crypto/hpke"
	"encoding/binary"
	"fmt"
	"slices"
)

// PrivateKey is one of a gateway's keys: an HPKE private key with its key
// identifier and the symmetric suites the gateway accepts with it.
type PrivateKey struct {
	cfg KeyConfig
	sk  hpke.PrivateKey
	sym []symParams // implemented suites, in cfg.Suites order
}

// GenerateKey returns a new random key for kem under keyID. Without suites,
// an X25519 key accepts HKDF-SHA256 with AES-128-GCM and a MLKEM768-X25519
// key HKDF-SHA256 with AES-256-GCM.
func GenerateKey(keyID uint8, kem KEM, suites ...SymmetricSuite) (*PrivateKey, error) {
	kp, ok := kemFor(kem)
	if !ok {
		return nil, fmt.Errorf("%w: KEM %v", ErrUnsupportedSuite, kem)
	}
	sk, err := kp.kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("ohttp: generating %v key: %w", kem, err)
	}
	return newPrivateKey(keyID, kem, sk, suites)
}

// NewPrivateKey returns the key whose secret is secret, serialized as
// RFC 9180's SerializePrivateKey does (32 bytes for both implemented KEMs).
// The default suites are those of GenerateKey.
func NewPrivateKey(keyID uint8, kem KEM, secret []byte, suites ...SymmetricSuite) (*PrivateKey, error) {
	kp, ok := kemFor(kem)
	if !ok {
		return nil, fmt.Errorf("%w: KEM %v", ErrUnsupportedSuite, kem)
	}
	sk, err := kp.kem.NewPrivateKey(secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %v private key: %v", ErrMalformed, kem, err)
	}
	return newPrivateKey(keyID, kem, sk, suites)
}

func newPrivateKey(keyID uint8, kem KEM, sk hpke.PrivateKey, suites []SymmetricSuite) (*PrivateKey, error) {
	if len(suites) == 0 {
		suites = []SymmetricSuite{defaultSuite(kem)}
	}
	if len(suites) > maxSuites {
		return nil, fmt.Errorf("%w: %d symmetric suites", ErrMalformed, len(suites))
	}
	k := &PrivateKey{
		cfg: KeyConfig{KeyID: keyID, KEM: kem, PublicKey: sk.PublicKey().Bytes(), Suites: slices.Clone(suites)},
		sk:  sk,
	}
	// A gateway must be able to answer in every suite it advertises.
	for _, s := range suites {
		p, ok := symFor(s)
		if !ok {
			return nil, fmt.Errorf("%w: symmetric suite %v", ErrUnsupportedSuite, s)
		}
		k.sym = append(k.sym, p)
	}
	return k, nil
}

// KeyConfig returns the public key configuration to publish for k.
func (k *PrivateKey) KeyConfig() KeyConfig { return k.cfg.clone() }

// privateKeyVersion starts a serialized private key, so the format can
// change without old bytes being misread.
const privateKeyVersion = 1

// MarshalBinary serializes k, secret included: a version byte, then the
// 2-byte-length-prefixed key configuration and secret key. Seal the result
// before it leaves the TEE.
func (k *PrivateKey) MarshalBinary() ([]byte, error) {
	cfg, err := k.cfg.MarshalBinary()
	if err != nil {
		return nil, err
	}
	secret, err := k.sk.Bytes()
	if err != nil {
		return nil, fmt.Errorf("ohttp: serializing %v private key: %w", k.cfg.KEM, err)
	}
	b := []byte{privateKeyVersion}
	b = binary.BigEndian.AppendUint16(b, uint16(len(cfg)))
	b = append(b, cfg...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(secret)))
	return append(b, secret...), nil
}

// ParsePrivateKey decodes a key serialized by MarshalBinary and checks that
// the secret matches the public key in its configuration.
func ParsePrivateKey(b []byte) (*PrivateKey, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: private key", ErrTruncated)
	}
	if b[0] != privateKeyVersion {
		return nil, fmt.Errorf("%w: private key format version %d", ErrMalformed, b[0])
	}
	rest := b[1:]
	field := func(what string) ([]byte, error) {
		if len(rest) < 2 {
			return nil, fmt.Errorf("%w: private key %s length", ErrTruncated, what)
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest)-2 < n {
			return nil, fmt.Errorf("%w: private key %s", ErrTruncated, what)
		}
		f := rest[2 : 2+n]
		rest = rest[2+n:]
		return f, nil
	}
	rawCfg, err := field("configuration")
	if err != nil {
		return nil, err
	}
	secret, err := field("secret")
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after private key", ErrMalformed, len(rest))
	}
	cfg, err := ParseKeyConfig(rawCfg)
	if err != nil {
		return nil, err
	}
	k, err := NewPrivateKey(cfg.KeyID, cfg.KEM, secret, cfg.Suites...)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(k.cfg.PublicKey, cfg.PublicKey) {
		return nil, fmt.Errorf("%w: private key %d does not match its public key", ErrMalformed, cfg.KeyID)
	}
	return k, nil
}
