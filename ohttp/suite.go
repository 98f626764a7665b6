package ohttp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"fmt"
	"hash"
)

// KEM is an HPKE key encapsulation mechanism identifier (RFC 9180, section
// 7.1, and the IANA HPKE registry).
type KEM uint16

// KDF is an HPKE key derivation function identifier.
type KDF uint16

// AEAD is an HPKE authenticated encryption identifier.
type AEAD uint16

// The algorithms this package implements.
const (
	// KEMX25519 is DHKEM(X25519, HKDF-SHA256).
	KEMX25519 KEM = 0x0020
	// KEMMLKEM768X25519 is the hybrid post-quantum KEM MLKEM768-X25519
	// (X-Wing) of draft-ietf-hpke-pq.
	KEMMLKEM768X25519 KEM = 0x647a

	// KDFHKDFSHA256 is HKDF-SHA256.
	KDFHKDFSHA256 KDF = 0x0001

	// AEADAES128GCM is AES-128-GCM.
	AEADAES128GCM AEAD = 0x0001
	// AEADAES256GCM is AES-256-GCM.
	AEADAES256GCM AEAD = 0x0002
)

// String returns the KEM's name, or its identifier in hex if unknown.
func (k KEM) String() string {
	switch k {
	case KEMX25519:
		return "DHKEM(X25519, HKDF-SHA256)"
	case KEMMLKEM768X25519:
		return "MLKEM768-X25519"
	}
	return fmt.Sprintf("KEM(0x%04x)", uint16(k))
}

// String returns the KDF's name, or its identifier in hex if unknown.
func (k KDF) String() string {
	if k == KDFHKDFSHA256 {
		return "HKDF-SHA256"
	}
	return fmt.Sprintf("KDF(0x%04x)", uint16(k))
}

// String returns the AEAD's name, or its identifier in hex if unknown.
func (a AEAD) String() string {
	switch a {
	case AEADAES128GCM:
		return "AES-128-GCM"
	case AEADAES256GCM:
		return "AES-256-GCM"
	}
	return fmt.Sprintf("AEAD(0x%04x)", uint16(a))
}

// SymmetricSuite is one KDF and AEAD combination of a key configuration.
type SymmetricSuite struct {
	KDF  KDF
	AEAD AEAD
}

// String returns the suite as "KDF/AEAD".
func (s SymmetricSuite) String() string { return s.KDF.String() + "/" + s.AEAD.String() }

// kemParams describes an implemented KEM: Npk and Nenc of RFC 9180.
type kemParams struct {
	kem       hpke.KEM
	npk, nenc int
	// rank orders KEMs by preference for SelectKeyConfig.
	rank int
}

func kemFor(id KEM) (kemParams, bool) {
	switch id {
	case KEMX25519:
		return kemParams{kem: hpke.DHKEM(ecdh.X25519()), npk: 32, nenc: 32, rank: 1}, true
	case KEMMLKEM768X25519:
		return kemParams{kem: hpke.MLKEM768X25519(), npk: 1216, nenc: 1120, rank: 2}, true
	}
	return kemParams{}, false
}

// defaultSuite is the symmetric suite a new key of each KEM gets.
func defaultSuite(id KEM) SymmetricSuite {
	if id == KEMMLKEM768X25519 {
		return SymmetricSuite{KDFHKDFSHA256, AEADAES256GCM}
	}
	return SymmetricSuite{KDFHKDFSHA256, AEADAES128GCM}
}

// symParams describes an implemented symmetric suite. The response is
// sealed outside HPKE (RFC 9458, section 4.4), so the package needs the KDF
// and AEAD both as crypto/hpke values and as plain primitives.
type symParams struct {
	suite SymmetricSuite
	kdf   hpke.KDF
	aead  hpke.AEAD
	hash  func() hash.Hash
	nk    int // AEAD key length
}

// aeadNonceSize is Nn for both implemented AEADs.
const aeadNonceSize = 12

// aeadTagSize is the authentication tag length of both implemented AEADs.
const aeadTagSize = 16

func symFor(s SymmetricSuite) (symParams, bool) {
	if s.KDF != KDFHKDFSHA256 {
		return symParams{}, false
	}
	p := symParams{suite: s, kdf: hpke.HKDFSHA256(), hash: sha256.New}
	switch s.AEAD {
	case AEADAES128GCM:
		p.aead, p.nk = hpke.AES128GCM(), 16
	case AEADAES256GCM:
		p.aead, p.nk = hpke.AES256GCM(), 32
	default:
		return symParams{}, false
	}
	return p, true
}

// responseNonceSize is max(Nn, Nk), the length of the exported secret and
// of the response nonce.
func (p symParams) responseNonceSize() int { return max(aeadNonceSize, p.nk) }

// responseKeyNonce derives the response AEAD key and nonce from the
// exported secret, the request's encapsulated key and the response nonce
// (RFC 9458, section 4.4).
func (p symParams) responseKeyNonce(secret, enc, responseNonce []byte) (key, nonce []byte, err error) {
	salt := make([]byte, 0, len(enc)+len(responseNonce))
	salt = append(append(salt, enc...), responseNonce...)
	prk, err := hkdf.Extract(p.hash, secret, salt)
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: response key: %w", err)
	}
	if key, err = hkdf.Expand(p.hash, prk, "key", p.nk); err != nil {
		return nil, nil, fmt.Errorf("ohttp: response key: %w", err)
	}
	if nonce, err = hkdf.Expand(p.hash, prk, "nonce", aeadNonceSize); err != nil {
		return nil, nil, fmt.Errorf("ohttp: response nonce: %w", err)
	}
	return key, nonce, nil
}

// responseAEAD returns the AEAD and nonce that protect the response.
func (p symParams) responseAEAD(secret, enc, responseNonce []byte) (cipher.AEAD, []byte, error) {
	key, nonce, err := p.responseKeyNonce(secret, enc, responseNonce)
	if err != nil {
		return nil, nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: response cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: response cipher: %w", err)
	}
	return aead, nonce, nil
}
