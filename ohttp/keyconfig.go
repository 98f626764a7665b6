package ohttp

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// KeyConfig is a gateway's public key configuration (RFC 9458, section 3):
// which key to encrypt to and with which algorithms.
type KeyConfig struct {
	// KeyID identifies the key among the gateway's keys.
	KeyID uint8
	// KEM is the key's encapsulation mechanism.
	KEM KEM
	// PublicKey is the serialized public key, Npk bytes for the KEM.
	PublicKey []byte
	// Suites lists the KDF and AEAD combinations the gateway accepts with
	// this key, in its order of preference.
	Suites []SymmetricSuite
}

// maxSuites is how many symmetric suites fit in the 16-bit length field.
const maxSuites = 65532 / 4

// MarshalBinary encodes c in the key configuration format of RFC 9458,
// section 3.1.
func (c KeyConfig) MarshalBinary() ([]byte, error) {
	return c.appendBinary(nil)
}

func (c KeyConfig) appendBinary(b []byte) ([]byte, error) {
	kp, ok := kemFor(c.KEM)
	if !ok {
		return nil, fmt.Errorf("%w: key configuration %d: KEM %v", ErrUnsupportedSuite, c.KeyID, c.KEM)
	}
	if len(c.PublicKey) != kp.npk {
		return nil, fmt.Errorf("%w: key configuration %d: %v public key of %d bytes, want %d", ErrMalformed, c.KeyID, c.KEM, len(c.PublicKey), kp.npk)
	}
	if len(c.Suites) == 0 || len(c.Suites) > maxSuites {
		return nil, fmt.Errorf("%w: key configuration %d: %d symmetric suites, want 1 to %d", ErrMalformed, c.KeyID, len(c.Suites), maxSuites)
	}
	b = append(b, c.KeyID)
	b = binary.BigEndian.AppendUint16(b, uint16(c.KEM))
	b = append(b, c.PublicKey...)
	b = binary.BigEndian.AppendUint16(b, uint16(4*len(c.Suites)))
	for _, s := range c.Suites {
		b = binary.BigEndian.AppendUint16(b, uint16(s.KDF))
		b = binary.BigEndian.AppendUint16(b, uint16(s.AEAD))
	}
	return b, nil
}

// ParseKeyConfig decodes a single key configuration, which must fill b
// exactly. A KEM this package does not implement is refused with
// ErrUnsupportedSuite, since its public key length is unknown; unknown
// symmetric suites are kept, as they are the gateway's to list.
func ParseKeyConfig(b []byte) (KeyConfig, error) {
	c, n, err := parseKeyConfig(b)
	if err != nil {
		return KeyConfig{}, err
	}
	if n != len(b) {
		return KeyConfig{}, fmt.Errorf("%w: %d bytes after key configuration %d", ErrMalformed, len(b)-n, c.KeyID)
	}
	return c, nil
}

// parseKeyConfig decodes the key configuration at the start of b and
// returns how many bytes it used.
func parseKeyConfig(b []byte) (KeyConfig, int, error) {
	if len(b) < 3 {
		return KeyConfig{}, 0, fmt.Errorf("%w: key configuration header", ErrTruncated)
	}
	c := KeyConfig{KeyID: b[0], KEM: KEM(binary.BigEndian.Uint16(b[1:3]))}
	kp, ok := kemFor(c.KEM)
	if !ok {
		return KeyConfig{}, 0, fmt.Errorf("%w: key configuration %d: KEM %v", ErrUnsupportedSuite, c.KeyID, c.KEM)
	}
	off := 3
	if len(b)-off < kp.npk+2 {
		return KeyConfig{}, 0, fmt.Errorf("%w: key configuration %d: public key", ErrTruncated, c.KeyID)
	}
	c.PublicKey = slices.Clone(b[off : off+kp.npk])
	off += kp.npk
	if _, err := kp.kem.NewPublicKey(c.PublicKey); err != nil {
		return KeyConfig{}, 0, fmt.Errorf("%w: key configuration %d: %v public key: %v", ErrMalformed, c.KeyID, c.KEM, err)
	}
	n := int(binary.BigEndian.Uint16(b[off:]))
	off += 2
	if n == 0 || n%4 != 0 || n > 65532 {
		return KeyConfig{}, 0, fmt.Errorf("%w: key configuration %d: symmetric algorithms length %d", ErrMalformed, c.KeyID, n)
	}
	if len(b)-off < n {
		return KeyConfig{}, 0, fmt.Errorf("%w: key configuration %d: symmetric algorithms", ErrTruncated, c.KeyID)
	}
	c.Suites = make([]SymmetricSuite, n/4)
	for i := range c.Suites {
		c.Suites[i] = SymmetricSuite{
			KDF:  KDF(binary.BigEndian.Uint16(b[off:])),
			AEAD: AEAD(binary.BigEndian.Uint16(b[off+2:])),
		}
		off += 4
	}
	return c, off, nil
}

// MarshalKeyConfigs encodes one or more key configurations as an
// application/ohttp-keys list: each encoding prefixed with its 2-byte
// length (RFC 9458, section 3.2). The result is what a gateway serves and
// what conftrace's attestation binds.
func MarshalKeyConfigs(cs []KeyConfig) ([]byte, error) {
	if len(cs) == 0 {
		return nil, fmt.Errorf("%w: no key configurations", ErrMalformed)
	}
	var b []byte
	for _, c := range cs {
		start := len(b)
		b = append(b, 0, 0)
		var err error
		if b, err = c.appendBinary(b); err != nil {
			return nil, err
		}
		n := len(b) - start - 2
		if n > 0xffff {
			return nil, fmt.Errorf("%w: key configuration %d is %d bytes", ErrMalformed, c.KeyID, n)
		}
		binary.BigEndian.PutUint16(b[start:], uint16(n))
	}
	return b, nil
}

// ParseKeyConfigs decodes an application/ohttp-keys list. Configurations
// whose KEM this package does not implement are skipped; if none is left
// the error wraps ErrUnsupportedSuite. Any encoding error rejects the whole
// list, as RFC 9458 requires, so that clients can't be told apart by what
// they salvage from a damaged list.
func ParseKeyConfigs(b []byte) ([]KeyConfig, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty key configuration list", ErrTruncated)
	}
	var cs []KeyConfig
	skipped := 0
	for off := 0; off < len(b); {
		if len(b)-off < 2 {
			return nil, fmt.Errorf("%w: key configuration length", ErrTruncated)
		}
		n := int(binary.BigEndian.Uint16(b[off:]))
		off += 2
		if len(b)-off < n {
			return nil, fmt.Errorf("%w: key configuration of %d bytes, %d left", ErrTruncated, n, len(b)-off)
		}
		raw := b[off : off+n]
		off += n
		if len(raw) >= 3 {
			if _, ok := kemFor(KEM(binary.BigEndian.Uint16(raw[1:3]))); !ok {
				skipped++
				continue
			}
		}
		c, err := ParseKeyConfig(raw)
		if err != nil {
			return nil, fmt.Errorf("%w (list entry %d)", err, len(cs)+skipped)
		}
		cs = append(cs, c)
	}
	if len(cs) == 0 {
		return nil, fmt.Errorf("%w: none of %d key configurations uses a known KEM", ErrUnsupportedSuite, skipped)
	}
	return cs, nil
}

// SelectKeyConfig picks the configuration a client should use: the
// strongest KEM (the post-quantum hybrid over X25519) among those with a
// symmetric suite this package implements, first in list order on ties.
func SelectKeyConfig(cs []KeyConfig) (KeyConfig, error) {
	best, bestRank := -1, 0
	for i, c := range cs {
		kp, ok := kemFor(c.KEM)
		if !ok || kp.rank <= bestRank || !slices.ContainsFunc(c.Suites, func(s SymmetricSuite) bool { _, ok := symFor(s); return ok }) {
			continue
		}
		best, bestRank = i, kp.rank
	}
	if best < 0 {
		return KeyConfig{}, fmt.Errorf("%w: no usable key configuration among %d", ErrUnsupportedSuite, len(cs))
	}
	return cs[best].clone(), nil
}

func (c KeyConfig) clone() KeyConfig {
	c.PublicKey = slices.Clone(c.PublicKey)
	c.Suites = slices.Clone(c.Suites)
	return c
}
