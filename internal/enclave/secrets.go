package enclave

// Secrets of the code around the enclave logic.
//
// The service that assembles the backend holds secrets of its own that
// must survive a restart and may leave the TEE only sealed: the private
// keys of the Oblivious HTTP gateway. The enclave seals them, because it
// already holds the key hierarchy: the service never handles a sealing,
// key-encryption or data key, and the store, which never imports the
// enclave or package seal, gets sealed bytes only.
//
// The key derives from the key-encryption key rather than from the TEE's
// sealing key, so it goes wherever the KEK goes: a replica that obtains the
// KEK from an attested peer opens the same secrets (and serves the same
// OHTTP keys), and a new KEK makes every old sealed secret unreadable.
// The secrets key derives from the record-key MAC key, which derives from
// the KEK, with a label of its own: HKDF keeps the two uses independent.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/conftrace/conftrace/internal/seal"
)

const (
	// secretsKeyLabel is the HKDF info of the key that seals secrets.
	secretsKeyLabel = "conftrace enclave service secrets v1"
	// secretLabel starts the additional data of a sealed secret, so that
	// nothing else sealed by conftrace can be passed off as one.
	secretLabel = "conftrace/enclave secret\x00"
	// secretVersion is the first byte of a sealed secret and part of its
	// additional data.
	secretVersion = 1
	// secretOverhead is what sealing adds: the version, the nonce and the
	// GCM tag.
	secretOverhead = 1 + 12 + 16
)

// SealSecret seals secret, which the caller stores under name (a table and
// key of its choosing), for the untrusted store: AES-256-GCM under a key
// derived from the key-encryption key, bound to name. Only this enclave's
// code with the same KEK opens it, and only under the same name.
func (e *Enclave) SealSecret(name string, secret []byte) ([]byte, error) {
	a, err := e.secretsAEAD(name)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1, secretOverhead+len(secret))
	out[0] = secretVersion
	return a.Seal(out, nil, secret, secretAD(name)), nil
}

// OpenSecret opens what SealSecret sealed under name. Bytes that were
// changed, sealed under another name or under another KEK fail with an
// error wrapping seal.ErrTampered: the caller must not use them.
func (e *Enclave) OpenSecret(name string, sealed []byte) ([]byte, error) {
	a, err := e.secretsAEAD(name)
	if err != nil {
		return nil, err
	}
	if len(sealed) < secretOverhead {
		return nil, fmt.Errorf("enclave: secret %q: %d bytes is too short: %w", name, len(sealed), seal.ErrTampered)
	}
	if sealed[0] != secretVersion {
		return nil, fmt.Errorf("enclave: secret %q: unknown format version %d: %w", name, sealed[0], seal.ErrTampered)
	}
	plain, err := a.Open(nil, nil, sealed[1:], secretAD(name))
	if err != nil {
		return nil, fmt.Errorf("enclave: secret %q does not open (changed, moved, or sealed under another key): %w", name, seal.ErrTampered)
	}
	return plain, nil
}

// secretsAEAD derives the secrets key afresh: secrets are sealed at start
// and at rotations only, and Enclave keeps no state for them.
func (e *Enclave) secretsAEAD(name string) (cipher.AEAD, error) {
	if name == "" {
		return nil, errors.New("enclave: a secret needs a name")
	}
	key, err := hkdf.Key(sha256.New, e.macKey, nil, secretsKeyLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("enclave: secrets key: %w", err)
	}
	defer clear(key)
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("enclave: secrets key: %w", err)
	}
	a, err := cipher.NewGCMWithRandomNonce(b)
	if err != nil {
		return nil, fmt.Errorf("enclave: secrets key: %w", err)
	}
	return a, nil
}

// secretAD binds a sealed secret to the format and to its name.
func secretAD(name string) []byte {
	ad := make([]byte, 0, len(secretLabel)+1+4+len(name))
	ad = append(ad, secretLabel...)
	ad = append(ad, secretVersion)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(name)))
	return append(ad, name...)
}
